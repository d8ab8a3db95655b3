"""Configuration: documented defaults, the example file, environment overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from roomserver.bus.config import BusConfig
from roomserver.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def test_no_file_gives_the_embedded_defaults() -> None:
    config = load_config(None, environ={})
    assert config == Config()
    assert config.nats.url is None and config.database.url is None
    assert config.database_url.startswith("sqlite:///") and config.database_url.endswith(
        "data/roomserver.db"
    )
    assert config.signing_key_file == Path("data/signing.key")


def test_example_file_states_exactly_the_defaults() -> None:
    assert load_config(REPO / "config.example.yaml", environ={}) == Config()


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server_name: file.example\ndatabase:\n  url: sqlite:///file.db\n")
    config = load_config(
        path,
        environ={
            "ROOMSERVER_DATABASE__URL": "postgresql://u@h/db",
            "ROOMSERVER_FEDERATION__ENABLED": "false",
            "ROOMSERVER_FEDERATION__NOTARY_SERVERS": "a.example,b.example",
            "ROOMSERVER_INPUT__MAX_MISSING_PROCESSING_S": "12.5",
            "ROOMSERVER_INPUT__VERIFY_THREADS": "3",
            "ROOMSERVER_INPUT__VERIFY_PROCESSES": "0",
            "ROOMSERVER_INPUT__OPTIMISTIC_READS": "false",
            # Test and CI switches, not config keys:
            "ROOMSERVER_REQUIRE_POSTGRES": "1",
            "ROOMSERVER_REQUIRE_SYNAPSE": "1",
            "ROOMSERVER_REQUIRE_ATHERIS": "1",
            "ROOMSERVER_TEST_PG": "postgresql://127.0.0.1:5432",
            "ROOMSERVER_FUZZ_SECONDS": "20",
        },
    )
    assert config.server_name == "file.example"
    assert config.database_url == "postgresql://u@h/db"
    assert config.federation.enabled is False
    assert config.federation.notary_servers == ["a.example", "b.example"]
    assert config.input.max_missing_processing_s == 12.5
    assert config.input.verify_threads == 3
    assert config.input.verify_processes == 0
    assert config.input.optimistic_reads is False


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("nats:\n  ulr: x\n", {}, "nats.ulr: unknown configuration key"),
        ("federation:\n  enabled: maybe\n", {}, "federation.enabled: expected true or false"),
        ("input: 3\n", {}, "input: expected a mapping"),
        ("- a\n- b\n", {}, "the top level must be a mapping"),
        ("a: [\n", {}, "is not valid YAML"),
        ("", {"ROOMSERVER_INPUT__MAX_MISSING_PROCESSING_S": "soon"}, "expected a number"),
        ("input:\n  verify_threads: -1\n", {}, "verify_threads: expected an integer of 0 or"),
        ("input:\n  verify_threads: true\n", {}, "verify_threads: expected an integer of 0 or"),
        ("input:\n  verify_processes: -2\n", {}, "verify_processes: expected an integer of 0"),
    ],
)
def test_bad_config_names_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(path, environ=environ)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml", environ={})


def test_nats_url_takes_several_servers_and_replicas(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("nats:\n  url: [nats://a:4222, 'nats://b:4222 ']\n  replicas: 3\n")
    config = load_config(path, environ={})
    assert config.nats.url == "nats://a:4222,nats://b:4222"
    assert config.nats.urls == ["nats://a:4222", "nats://b:4222"]
    assert config.nats.replicas == 3
    env = load_config(
        None,
        environ={
            "ROOMSERVER_NATS__URL": "nats://a:1, nats://b:2",
            "ROOMSERVER_NATS__REPLICAS": "3",
        },
    )
    assert env.nats.urls == ["nats://a:1", "nats://b:2"] and env.nats.replicas == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nats:\n  replicas: 0\n", "nats.replicas: must be 1 or more"),
        ("nats:\n  replicas: two\n", "nats.replicas: expected an integer"),
        ("nats:\n  replicas: 1.5\n", "nats.replicas: expected an integer"),
        ("nats:\n  url: []\n", "nats.url: expected server URLs"),
    ],
)
def test_bad_cluster_settings_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


def test_bus_limits_are_settable_and_default_to_the_bus_defaults(tmp_path: Path) -> None:
    assert Config().nats.bus_limits() == {
        "max_workers": BusConfig().max_workers,
        "max_api_requests": BusConfig().max_api_requests,
        "api_timeout": BusConfig().api_timeout,
        "delete_backlog": BusConfig().delete_backlog,
        "unit_max_messages": BusConfig().unit_max_messages,
        "unit_max_bytes": BusConfig().unit_max_bytes,
    }
    path = tmp_path / "c.yaml"
    path.write_text(
        "nats:\n  max_workers: 1000\n  max_api_requests: 8\n  api_timeout_s: 5\n"
        "  delete_backlog: 0\n  unit_max_messages: 1\n  unit_max_bytes: 4096\n"
    )
    nats = load_config(path, environ={"ROOMSERVER_NATS__MAX_WORKERS": "2000"}).nats
    limits = nats.bus_limits()
    assert limits == {
        "max_workers": 2000,
        "max_api_requests": 8,
        "api_timeout": 5.0,
        "delete_backlog": 0,
        "unit_max_messages": 1,
        "unit_max_bytes": 4096,
    }
    bus = BusConfig(**limits)  # what the application builds its bus with
    assert (bus.max_workers, bus.api_timeout, bus.unit_max_messages) == (2000, 5.0, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nats:\n  max_workers: 0\n", "nats.max_workers: must be 1 or more, got 0"),
        ("nats:\n  max_workers: many\n", "nats.max_workers: expected an integer"),
        ("nats:\n  max_api_requests: -1\n", "nats.max_api_requests: must be 1 or more"),
        ("nats:\n  api_timeout_s: 0\n", "nats.api_timeout_s: must be positive"),
        ("nats:\n  api_timeout_s: soon\n", "nats.api_timeout_s: expected a number"),
        ("nats:\n  delete_backlog: -5\n", "nats.delete_backlog: must be 0 or more"),
        ("nats:\n  unit_max_messages: 0\n", "nats.unit_max_messages: must be 1 or more"),
        ("nats:\n  unit_max_bytes: 1.5\n", "nats.unit_max_bytes: expected an integer"),
        ("nats:\n  max_worker: 10\n", "nats.max_worker: unknown configuration key"),
    ],
)
def test_bad_bus_limits_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})
