"""The compiled modules' guard (``roomserver/_native.py``): a build runs only while every source
it was made from is unchanged, and ``ROOMSERVER_NATIVE=0`` runs pure Python."""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from roomserver import _native

REPO = Path(__file__).resolve().parents[1]


def _manifest(tmp_path: Path, source: Path) -> Path:
    facts = {"source": str(source.relative_to(tmp_path)), **_native.source_facts(source)}
    described = {
        "ext_suffix": importlib.machinery.EXTENSION_SUFFIXES[0],
        "modules": {"roomserver.m": facts},
    }
    return _manifest_of(tmp_path, described)


def _manifest_of(tmp_path: Path, described: dict[str, object]) -> Path:
    manifest = tmp_path / "roomserver" / "_native.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(described), encoding="utf-8")
    return manifest


def test_a_build_is_used_only_while_its_sources_are_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(_native.ENV, raising=False)
    source = tmp_path / "src" / "m.py"
    source.parent.mkdir()
    source.write_text("X = 1\n", encoding="utf-8")
    manifest = _manifest(tmp_path, source)
    assert _native.check(manifest).compiled

    # Touched but identical: still the build's source.
    os.utime(source, ns=(0, 0))
    assert _native.check(manifest).compiled

    source.write_text("X = 2\n", encoding="utf-8")
    state = _native.check(manifest)
    assert not state.compiled and state.reason.startswith("stale")
    assert "roomserver.m" in state.reason

    # Built by another Python: its extensions would not load.
    source.write_text("X = 1\n", encoding="utf-8")
    manifest = _manifest(tmp_path, source)
    described = json.loads(manifest.read_text(encoding="utf-8"))
    manifest.write_text(json.dumps({**described, "ext_suffix": ".cpython-399-x.so"}), "utf-8")
    assert _native.check(manifest).reason == "built for another Python (.cpython-399-x.so)"

    source.unlink()
    assert not _native.check(_manifest_of(tmp_path, described)).compiled
    assert not _native.check(tmp_path / "missing.json").compiled
    manifest.write_text("{", encoding="utf-8")
    assert "unreadable" in _native.check(manifest).reason


def test_the_environment_turns_compiled_modules_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "src" / "m.py"
    source.parent.mkdir()
    source.write_text("X = 1\n", encoding="utf-8")
    manifest = _manifest(tmp_path, source)
    monkeypatch.setenv(_native.ENV, "0")
    assert _native.check(manifest) == _native.NativeState(False, f"{_native.ENV} is off")


def _files_in_child(env: dict[str, str]) -> dict[str, str]:
    code = (
        "import json, roomserver.core.pdu as p, roomserver.input.pipeline as q\n"
        "from roomserver import _native\n"
        "print(json.dumps({'pdu': p.__file__, 'pipeline': q.__file__,"
        " 'compiled': _native.STATE.compiled, 'listed': _native.compiled_modules()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout))


def test_pure_python_on_request_and_the_build_otherwise() -> None:
    env = {k: v for k, v in os.environ.items() if k != _native.ENV}
    off = _files_in_child({**env, _native.ENV: "0"})
    assert off["pdu"].endswith("pdu.py") and off["pipeline"].endswith("pipeline.py")
    assert off["compiled"] is False and off["listed"] == []

    default = _files_in_child(env)
    if os.environ.get("ROOMSERVER_REQUIRE_NATIVE") == "1":
        assert default["compiled"] is True, "CI must run the compiled modules"
    if default["compiled"]:
        assert default["pdu"].endswith(".so") and default["pipeline"].endswith(".so")
        assert {"roomserver.core.pdu", "roomserver.input.pipeline"} <= set(default["listed"])
    else:
        assert default["pdu"].endswith("pdu.py") and default["listed"] == []
