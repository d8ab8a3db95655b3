"""Compile the per-event modules with mypyc: ``./dev compile`` (``./dev setup`` does it once).

The modules listed below (the event core, the input pipeline, the wire codec) are compiled to C
extensions and placed beside their sources under ``src/``; ``src/roomserver/_native.json``
records the sources they were built from, so that ``roomserver/_native.py`` loads them only
while every one of those sources is unchanged (an edit falls back to pure Python until the next
compile). ``--clean`` removes the compiled modules and the record.

Needs a C compiler and the Python headers (``gcc``, ``python3-dev``); the build takes a few
minutes on two cores. Without it everything runs as pure Python, only slower.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from roomserver._native import source_facts

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MANIFEST = SRC / "roomserver" / "_native.json"

#: Globs under src/, compiled together (one group: they call each other directly in C).
INCLUDE = [
    "roomserver/core/*.py",
    "roomserver/core/auth/*.py",
    "roomserver/input/*.py",
    "roomserver/api.py",
    "roomserver/wire_json.py",
    "roomserver/state_view.py",
]
#: Not compiled: package initialisers, and modules whose classes must stay interpreted:
#: ``typing.runtime_checkable`` protocols, and exceptions that modules outside the set subclass
#: (an interpreted class cannot subclass a compiled one).
EXCLUDE = {
    "roomserver/core/errors.py",
    "roomserver/input/errors.py",
    "roomserver/input/bulk.py",
}


def sources() -> list[str]:
    found: set[str] = set()
    for pattern in INCLUDE:
        for path in SRC.glob(pattern):
            relative = path.relative_to(SRC).as_posix()
            if path.name != "__init__.py" and relative not in EXCLUDE:
                found.add(relative)
    return sorted(found)


def clean() -> int:
    removed = 0
    for path in [*SRC.glob("*__mypyc*.so"), *(SRC / "roomserver").rglob("*.so")]:
        path.unlink()
        removed += 1
    MANIFEST.unlink(missing_ok=True)
    return removed


def module_name(relative: str) -> str:
    return relative.removesuffix(".py").replace("/", ".")


def compile_all(jobs: int) -> None:
    from mypyc.build import mypycify  # the dev extra's mypy
    from setuptools import setup

    paths = sources()
    started = time.monotonic()
    # "source": from the directory holding the package.
    facts = {
        module_name(relative): {"source": relative, **source_facts(SRC / relative)}
        for relative in paths
    }
    with tempfile.TemporaryDirectory(prefix="roomserver-native-") as tmp:
        build = Path(tmp)
        cwd = os.getcwd()
        os.environ["MYPY_CACHE_DIR"] = str(build / "mypy-cache")  # not under src/
        os.chdir(SRC)  # mypyc names modules by their path from here
        try:
            extensions = mypycify(
                paths, opt_level="3", target_dir=str(build / "c"), multi_file=True
            )
            setup(
                name="roomserver-native",
                ext_modules=extensions,
                script_args=[
                    *("-q", "build_ext", "--parallel", str(jobs)),
                    *("--build-lib", str(build / "lib"), "--build-temp", str(build / "tmp")),
                ],
            )
        finally:
            os.chdir(cwd)
        # Replace the previous build only once this one is complete.
        clean()
        built = sorted((build / "lib").rglob("*.so"))
        for library in built:
            target = SRC / library.relative_to(build / "lib")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(library, target)
    manifest = {
        "built_at": time.time(),
        "python": sys.version,
        "ext_suffix": importlib.machinery.EXTENSION_SUFFIXES[0],
        "modules": facts,
    }
    MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(
        f"compiled {len(paths)} modules ({len(built)} libraries) in "
        f"{time.monotonic() - started:.0f} s; record in {MANIFEST.relative_to(ROOT)}",
        file=sys.stderr,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if args.clean:
        print(f"removed {clean()} compiled libraries", file=sys.stderr)
        return
    compile_all(args.jobs)


if __name__ == "__main__":
    main()
