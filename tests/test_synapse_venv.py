"""The differential tests' switch: a missing Synapse environment skips locally, fails in CI."""

from __future__ import annotations

from pathlib import Path

import pytest

import tests.synapse_venv as synapse_venv


def test_missing_synapse_skips_with_the_setup_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(synapse_venv, "SYNAPSE_PYTHON", tmp_path / "absent" / "python")
    monkeypatch.delenv("ROOMSERVER_REQUIRE_SYNAPSE", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"bench/setup_synapse_venv\.sh"):
        synapse_venv.require_synapse()


def test_missing_synapse_fails_when_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(synapse_venv, "SYNAPSE_PYTHON", tmp_path / "absent" / "python")
    monkeypatch.setenv("ROOMSERVER_REQUIRE_SYNAPSE", "1")
    with pytest.raises(pytest.fail.Exception, match="ROOMSERVER_REQUIRE_SYNAPSE=1"):
        synapse_venv.require_synapse()


def test_present_synapse_is_returned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text("")
    monkeypatch.setattr(synapse_venv, "SYNAPSE_PYTHON", python)
    monkeypatch.setenv("ROOMSERVER_REQUIRE_SYNAPSE", "1")
    assert synapse_venv.require_synapse() == python
