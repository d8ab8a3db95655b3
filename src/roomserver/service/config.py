"""Service configuration: a YAML file with documented defaults, overridable by environment.

Every key, with its default (the file ``config.example.yaml`` at the repository root shows the
same). An environment variable ``ROOMSERVER_<SECTION>__<KEY>`` (or ``ROOMSERVER_<KEY>`` for
top-level keys) overrides the file, e.g. ``ROOMSERVER_DATABASE__URL=postgresql://...``.

    server_name: localhost           # our Matrix server name
    data_dir: ./data                 # embedded NATS store, SQLite file and signing key live here
    signing_key_path: null           # default <data_dir>/signing.key (generated when missing)
    log_level: INFO
    nats:
      url: null                      # null: start the embedded nats-server; else nats://host:port,
                                     # or several servers of a cluster (a list, or comma-separated)
      stream_prefix: ""              # prefix of the stream names (InputRoomEvent, OutputRoomEvent)
      replicas: 1                    # stream replicas (3 on a 3-node JetStream cluster)
    database:
      url: null                      # null: sqlite:///<data_dir>/roomserver.db; or postgresql://...
    federation:
      enabled: true                  # fetch missing events and server keys over federation
      server_overrides: {}           # server_name -> base URL (tests, private deployments)
      notary_servers: []             # key notaries asked via /_matrix/key/v2/query
      request_timeout_s: 30
      verify_tls: true
    input:
      max_missing_processing_s: 300  # the most one event may spend fetching missing data
    metrics:
      listen: 127.0.0.1:9108         # Prometheus /metrics; null disables
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """The configuration file or an override is invalid; the message names the key."""


@dataclass(frozen=True, slots=True)
class NatsConfig:
    #: One URL, or several comma-separated (a YAML list is joined so).
    url: str | None = None
    stream_prefix: str = ""
    replicas: int = 1

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ConfigError(f"nats.replicas: must be 1 or more, got {self.replicas}")

    @property
    def urls(self) -> list[str]:
        """The server URLs (empty: start the embedded server)."""
        return [u.strip() for u in (self.url or "").split(",") if u.strip()]


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str | None = None


@dataclass(frozen=True, slots=True)
class FederationConfig:
    enabled: bool = True
    server_overrides: dict[str, str] = field(default_factory=dict)
    notary_servers: list[str] = field(default_factory=list)
    request_timeout_s: float = 30.0
    verify_tls: bool = True


@dataclass(frozen=True, slots=True)
class InputConfig:
    max_missing_processing_s: float = 300.0


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: str | None = "127.0.0.1:9108"


@dataclass(frozen=True, slots=True)
class Config:
    server_name: str = "localhost"
    data_dir: str = "./data"
    signing_key_path: str | None = None
    log_level: str = "INFO"
    nats: NatsConfig = field(default_factory=NatsConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    input: InputConfig = field(default_factory=InputConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'roomserver.db'}"

    @property
    def signing_key_file(self) -> Path:
        if self.signing_key_path:
            return Path(self.signing_key_path)
        return Path(self.data_dir) / "signing.key"


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of ``default`` (strings from the environment convert)."""
    if isinstance(default, bool):
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if isinstance(default, int):
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
        if number != value and not isinstance(value, str):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return number
    if name == "nats.url" and isinstance(value, list):
        # Several servers of one cluster: kept as one comma-separated string.
        if not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise ConfigError(f"{name}: expected server URLs, got {value!r}")
        return ",".join(v.strip() for v in value)
    if isinstance(default, dict):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(default, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return [str(v) for v in value]
    if value is None:
        return None
    if not isinstance(value, str | int | float):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return str(value)


def _build(cls: type[Any], data: dict[str, Any], prefix: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown configuration key")
    defaults = cls()
    values: dict[str, Any] = {}
    for name in known:
        default = getattr(defaults, name)
        if name not in data:
            continue
        raw = data[name]
        if is_dataclass(default):
            if raw is None:
                raw = {}
            if not isinstance(raw, dict):
                raise ConfigError(f"{prefix}{name}: expected a mapping")
            values[name] = _build(type(default), raw, f"{prefix}{name}.")
        else:
            values[name] = _coerce(f"{prefix}{name}", raw, default)
    return replace(defaults, **values)


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith("ROOMSERVER_") or key == "ROOMSERVER_REQUIRE_POSTGRES":
            continue
        parts = key[len("ROOMSERVER_") :].lower().split("__")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path: str | Path | None = None, *, environ: dict[str, str] | None = None) -> Config:
    """Load the config file (or the defaults when ``path`` is None) and apply env overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping")
        data = loaded
    data = _merge(data, _env_overrides(dict(os.environ if environ is None else environ)))
    config: Config = _build(Config, data, "")
    return config
