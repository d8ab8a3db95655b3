"""Coverage-guided fuzzing of one target with atheris (libFuzzer for Python).

    .venv/bin/python -m tests.fuzz.run_atheris TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET is a name in ``tests.fuzz.targets.TARGETS``. The modules under test are instrumented
for coverage as they are imported. libFuzzer writes new interesting inputs to the first corpus
directory and a failing input to ``-artifact_prefix``; e.g. ``-max_total_time=20``.
``tests/fuzz/test_atheris.py`` runs every target for a bounded time.
"""

from __future__ import annotations

import sys

import atheris


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    name = sys.argv.pop(1)
    with atheris.instrument_imports(include=["roomserver.core", "roomserver.api"]):
        from tests.fuzz.targets import TARGETS
    if name not in TARGETS:
        raise SystemExit(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    atheris.Setup(sys.argv, TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
