"""The import rules between layers (docs: README "How it works"), checked on the source.

``app.py`` is the composition root (with ``startup.py``, opening the parts, ``handler.py``, the
room workers' handler, and ``submit.py``, the submission side) and ``service/`` sits on top of
it: none of them imports ``service/``. ``query/`` reads through the state read model
(``state_view``), never through the input pipeline's modules. ``input``, ``storage``, ``bus``
and ``federation`` meet only through ``ports.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import roomserver

ROOT = Path(roomserver.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every ``roomserver`` module ``path`` imports, at the top or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "roomserver"}


def _sources(target: str) -> list[Path]:
    path = ROOT / target
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


FORBIDDEN = [
    ("app.py", "roomserver.service"),
    ("handler.py", "roomserver.service"),
    ("submit.py", "roomserver.service"),
    ("startup.py", "roomserver.service"),
    ("handler.py", "roomserver.app"),
    ("submit.py", "roomserver.app"),
    ("startup.py", "roomserver.app"),
    ("config.py", "roomserver.service"),
    ("metrics.py", "roomserver.service"),
    ("state_view.py", "roomserver.input"),
    ("query", "roomserver.input"),
    ("input", "roomserver.storage"),
    ("input", "roomserver.bus"),
    ("input", "roomserver.federation"),
    ("input", "roomserver.app"),
    ("storage", "roomserver.input"),
    ("bus", "roomserver.input"),
    ("federation", "roomserver.input"),
]


@pytest.mark.parametrize(("source", "forbidden"), FORBIDDEN)
def test_layer_does_not_import(source: str, forbidden: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _sources(source)
        for name in sorted(_imports(path))
        if name == forbidden or name.startswith(forbidden + ".")
    ]
    assert offenders == []


def test_the_scan_sees_imports() -> None:
    """The check above would see a forbidden import: ``service/`` does import ``app``."""
    assert any("roomserver.app" in _imports(path) for path in _sources("service")), (
        "no service module imports roomserver.app"
    )
    assert "roomserver.state_view" in _imports(ROOT / "query" / "queries.py")
