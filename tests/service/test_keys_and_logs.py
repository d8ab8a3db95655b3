"""Signing key files with their key ID, ``federation.trusted_keys``, ``log_format: json``, and
packaging metadata that builds without deprecation warnings."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from roomserver.config import ConfigError, load_config
from roomserver.core.base64 import encode_base64
from roomserver.service.logs import JsonFormatter
from roomserver.startup import load_or_create_signing_key

REPO = Path(__file__).resolve().parents[2]
KEY = SigningKey(b"\x11" * 32)
VERIFY = encode_base64(bytes(KEY.verify_key))


# -- signing key files -----------


def test_generated_key_file_keeps_its_key_id(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    key_id, key = load_or_create_signing_key(path)
    assert key_id.startswith("ed25519:a_") and key_id.count(":") == 1
    assert "-" not in key_id  # generated versions keep to the spec's [a-zA-Z0-9_]
    again_id, again = load_or_create_signing_key(path)
    assert (again_id, bytes(again)) == (key_id, bytes(key))
    assert path.stat().st_mode & 0o777 == 0o600


def test_key_file_with_its_own_id(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    path.write_text(f"ed25519 k2024 {encode_base64(bytes(KEY))}\n")
    assert load_or_create_signing_key(path) == ("ed25519:k2024", KEY)


@pytest.mark.parametrize(
    "text", [f"{encode_base64(bytes(KEY))}\n", f"ed25519 {encode_base64(bytes(KEY))}"]
)
def test_old_key_file_without_an_id_signs_as_auto(tmp_path: Path, text: str) -> None:
    path = tmp_path / "signing.key"
    path.write_text(text)
    assert load_or_create_signing_key(path) == ("ed25519:auto", KEY)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ed25519 a b c\n", "expected 'ed25519 <version> <base64 seed>'"),
        ("rsa k1 AAAA\n", "expected 'ed25519 <version> <base64 seed>'"),
        (f"ed25519 k:1 {encode_base64(bytes(KEY))}\n", "the key version must be"),
        ("ed25519 k1 !!!!\n", "not valid base64"),
        ("ed25519 k1 AAAA\n", "must be 32 bytes"),
    ],
)
def test_bad_key_file_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "signing.key"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_or_create_signing_key(path)


# -- federation.trusted_keys -----------


def test_trusted_keys_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "federation:\n  trusted_keys:\n    remote.example:\n"
        f"      ed25519:k1: {VERIFY}\n      ed25519:old_2: {VERIFY}\n"
    )
    config = load_config(path, environ={})
    assert config.federation.trusted_keys == {
        "remote.example": {"ed25519:k1": VERIFY, "ed25519:old_2": VERIFY}
    }
    override = json.dumps({"other.example": {"ed25519:Ab_9": VERIFY}})
    config = load_config(path, environ={"ROOMSERVER_FEDERATION__TRUSTED_KEYS": override})
    assert config.federation.trusted_keys == {"other.example": {"ed25519:Ab_9": VERIFY}}
    assert load_config(None, environ={}).federation.trusted_keys == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[a, b]", "federation.trusted_keys: expected a mapping"),
        ("{remote.example: k}", "federation.trusted_keys.remote.example: expected a mapping"),
        ("{remote.example: {k1: " + VERIFY + "}}", "remote.example.k1: a key ID is"),
        ("{remote.example: {'ed25519:k1': short}}", "remote.example.ed25519:k1: expected an"),
        ("{remote.example: {'ed25519:k1': 12}}", "remote.example.ed25519:k1: expected an"),
        ("{a: [", "federation.trusted_keys: not a valid YAML or JSON mapping"),
    ],
)
def test_bad_trusted_keys_name_the_key(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, environ={"ROOMSERVER_FEDERATION__TRUSTED_KEYS": value})


# -- log_format -----------


def test_log_format_is_text_or_json(tmp_path: Path) -> None:
    assert load_config(None, environ={}).log_format == "text"
    assert load_config(None, environ={"ROOMSERVER_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match="log_format: expected text or json, got 'xml'"):
        load_config(None, environ={"ROOMSERVER_LOG_FORMAT": "xml"})


def test_json_formatter_gives_one_object_per_line() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord(
        "roomserver.test", logging.WARNING, __file__, 1, "room %s is\nstuck", ("!r:x",), None
    )
    line = formatter.format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "roomserver.test"
    assert entry["message"] == "room !r:x is\nstuck"
    assert entry["timestamp"].endswith("+00:00") and "T" in entry["timestamp"]
    assert "exception" not in entry
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = logging.LogRecord(
            "roomserver.test", logging.ERROR, __file__, 2, "failed", (), sys.exc_info()
        )
    line = formatter.format(failed)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["message"] == "failed"
    assert "Traceback" in entry["exception"] and "RuntimeError: boom" in entry["exception"]


# -- packaging -----------


@pytest.mark.slow
def test_wheel_builds_without_deprecation_warnings(tmp_path: Path) -> None:
    """The build backend (in pip's isolated build environment, as on install) warns about
    nothing in our metadata."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    process = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", ".", "-w", str(tmp_path)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-3000:]
    warnings = [
        line
        for line in output.splitlines()
        if "deprecat" in line.lower()
        or "BuildBackendWarning" in line
        or "SetuptoolsWarning" in line
    ]
    assert warnings == [], "\n".join(warnings)
    (wheel,) = tmp_path.glob("roomserver-*.whl")
    assert wheel.stat().st_size > 0
