"""Where the differential tests find Synapse: ``.synapse-venv`` (``bench/setup_synapse_venv.sh``).

Locally a missing environment skips those tests with the command that creates it; with
``ROOMSERVER_REQUIRE_SYNAPSE=1`` (set by CI, like ``ROOMSERVER_REQUIRE_POSTGRES``) it is a
failure instead.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYNAPSE_PYTHON = ROOT / ".synapse-venv" / "bin" / "python"


def require_synapse() -> Path:
    """The Synapse environment's interpreter; skips (or fails, in CI) when it is missing."""
    if SYNAPSE_PYTHON.exists():
        return SYNAPSE_PYTHON
    reason = ".synapse-venv with Synapse not set up (bash bench/setup_synapse_venv.sh)"
    if os.environ.get("ROOMSERVER_REQUIRE_SYNAPSE") == "1":
        pytest.fail(f"{reason}, and ROOMSERVER_REQUIRE_SYNAPSE=1")
    pytest.skip(reason)


def run_in_synapse(script: str, request: Any, *, timeout: float = 300) -> Any:
    """Run ``bench/<script>`` in the Synapse environment with ``request`` as JSON on stdin;
    return its JSON answer."""
    done = subprocess.run(
        [str(require_synapse()), str(ROOT / "bench" / script)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)
