"""Coverage-guided fuzzing (atheris) of every target in ``tests.fuzz.targets``, for a bounded
time: ``ROOMSERVER_FUZZ_SECONDS`` per target (default 20), the three targets in parallel.

Each run starts from the kept corpus (``corpus/<target>/``, read only) and adds what it finds to
a temporary directory. A failing input is written to the test's temporary directory, and its
path is in the failure message: copy it to ``corpus/<target>/crash-<what>`` as a regression.
Skipped when atheris is not installed (it has wheels for Linux x86_64 only), unless
``ROOMSERVER_REQUIRE_ATHERIS=1`` (set by CI), which makes that a failure.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
SECONDS = int(os.environ.get("ROOMSERVER_FUZZ_SECONDS", "20"))
REQUIRED = os.environ.get("ROOMSERVER_REQUIRE_ATHERIS") == "1"

pytestmark = pytest.mark.slow


def test_targets_survive_coverage_guided_fuzzing(tmp_path: Path) -> None:
    if importlib.util.find_spec("atheris") is None:
        if REQUIRED:
            pytest.fail("atheris is not installed and ROOMSERVER_REQUIRE_ATHERIS=1")
        pytest.skip("atheris is not installed (pip install atheris; Linux x86_64 wheels)")
    runs: dict[str, subprocess.Popen[str]] = {}
    for target in TARGETS:
        found = tmp_path / target
        found.mkdir()
        runs[target] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fuzz.run_atheris",
                target,
                f"-max_total_time={SECONDS}",
                "-timeout=10",  # one input taking longer is a hang: a failure
                "-rss_limit_mb=1024",
                f"-dict={HERE / 'json.dict'}",
                f"-artifact_prefix={tmp_path}/{target}-",
                str(found),
                str(HERE / "corpus" / target),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    failures = []
    for target, run in runs.items():
        output, _ = run.communicate(timeout=SECONDS + 120)
        done = re.search(r"Done (\d+) runs in (\d+) second", output)
        crashes = sorted(str(p) for p in tmp_path.glob(f"{target}-*"))
        summary = f"{target}: {done.group(0) if done else 'no summary'}"
        print(summary)
        if run.returncode != 0 or crashes or done is None:
            tail = "\n".join(output.splitlines()[-40:])
            failures.append(f"{summary}; exit {run.returncode}; inputs {crashes}\n{tail}")
    assert not failures, "\n\n".join(failures)
