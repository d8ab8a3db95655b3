"""Which of roomserver's modules run compiled, and the guard that keeps a stale build out.

``tools/compile_native.py`` (run by ``./dev setup``, or ``./dev compile``) compiles the modules
of the per-event path with mypyc into C extensions beside their sources, and writes
``_native.json``: each compiled module's source, its size, modification time and SHA-256. Python
imports an extension module in preference to the ``.py`` beside it, so a source edited after
the build would silently keep running the old compiled code. ``install`` (called by
``roomserver/__init__.py`` before any other module of the package is imported) prevents that:
the compiled modules are used only when every source they were built from is unchanged.
Otherwise, and when ``ROOMSERVER_NATIVE=0`` is set, a finder placed first on ``sys.meta_path``
loads every ``roomserver`` module from its ``.py`` source. It is all or nothing: compiled modules
call each other directly in C, so one stale module would still run through its compiled
callers.

Compiled and pure Python behave the same (the test suite runs on the compiled build in CI);
compiled code runs the per-event work with less CPU (docs/performance.md, "Compiled modules").
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

MANIFEST = Path(__file__).with_name("_native.json")
#: Set to ``0`` (or ``off``, ``false``, ``no``) to run every module from its source.
ENV = "ROOMSERVER_NATIVE"


@dataclass(frozen=True)
class NativeState:
    """What ``install`` decided: whether compiled modules may load, and why (for logs)."""

    compiled: bool
    reason: str


def source_facts(source: Path) -> dict[str, int | str]:
    """What the record keeps of a compiled module's source (``tools/compile_native.py`` writes
    it, ``check`` compares it): its size and modification time, then its SHA-256."""
    status = source.stat()
    return {
        "size": status.st_size,
        "mtime_ns": status.st_mtime_ns,
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
    }


def check(manifest: Path = MANIFEST) -> NativeState:
    """Whether the compiled build described by ``manifest`` matches its sources."""
    if os.environ.get(ENV, "").strip().lower() in ("0", "off", "false", "no"):
        return NativeState(False, f"{ENV} is off")
    try:
        described = json.loads(manifest.read_text(encoding="utf-8"))
        modules = described["modules"]
    except FileNotFoundError:
        return NativeState(False, "not compiled (run ./dev compile)")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return NativeState(False, f"unreadable {manifest.name}: {type(exc).__name__}")
    suffix = described.get("ext_suffix")
    if suffix is None:
        return NativeState(False, "stale: recorded by an older ./dev compile")
    if suffix != importlib.machinery.EXTENSION_SUFFIXES[0]:
        # Python would not load these extensions: say so rather than claim them.
        return NativeState(False, f"built for another Python ({suffix})")
    root = manifest.parent.parent
    for module, facts in modules.items():
        source = root / facts["source"]
        try:
            status = source.stat()
        except OSError:
            return NativeState(False, f"stale: {module}'s source is missing")
        if status.st_size == facts["size"] and status.st_mtime_ns == facts["mtime_ns"]:
            continue
        if hashlib.sha256(source.read_bytes()).hexdigest() != facts["sha256"]:
            return NativeState(False, f"stale: {module} changed since ./dev compile")
    return NativeState(True, f"{len(modules)} modules compiled")


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Loads a ``roomserver`` module from its ``.py`` where a compiled one sits beside it."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("roomserver."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            return None
        assert spec.origin is not None
        source = Path(spec.origin).with_name(fullname.rpartition(".")[2] + ".py")
        if not source.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


STATE = NativeState(False, "not checked")


def install() -> NativeState:
    """Decide once per process whether compiled modules may load (see the module docstring)."""
    global STATE
    if STATE.reason == "not checked":
        STATE = check()
        if not STATE.compiled:
            sys.meta_path.insert(0, _SourceFirst())
    return STATE


def compiled_modules() -> list[str]:
    """The ``roomserver`` modules imported so far that run compiled."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.startswith("roomserver.")
        and str(getattr(module, "__file__", None) or "").endswith(suffixes)
    )
