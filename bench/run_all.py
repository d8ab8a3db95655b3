"""Run every benchmark in one go (``./dev bench``). Extra arguments go to bench_e2e.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable


def run(argv: list[str]) -> int:
    print(f"\n=== {' '.join(Path(a).name if a.endswith('.py') else a for a in argv)}", flush=True)
    return subprocess.call(argv, cwd=HERE.parent)


def main() -> int:
    failures = 0
    failures += run([PY, str(HERE / "bench_e2e.py"), *sys.argv[1:]]) != 0
    failures += run([PY, str(HERE / "bench_phases.py")]) != 0
    failures += run([PY, str(HERE / "bench_auth.py")]) != 0
    failures += run([PY, str(HERE / "bench_storage.py"), "--backend", "both"]) != 0
    failures += run(["bash", str(HERE / "run_stateres.sh")]) != 0
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
