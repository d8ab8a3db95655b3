"""``roomserver serve`` sets the garbage collector (``service/gc_tuning.py``) before it opens
the roomserver; the library leaves the process's collector alone."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from roomserver.app import Roomserver
from roomserver.config import Config
from roomserver.service import serve as serve_module
from roomserver.service.gc_tuning import GC_THRESHOLDS


def test_tune_gc_sets_the_thresholds_and_freezes_what_exists() -> None:
    # In a process of its own: freezing is for the whole process.
    script = (
        "import gc, json\n"
        "from roomserver.service.gc_tuning import tune_gc\n"
        "before = (gc.get_threshold(), gc.get_freeze_count())\n"
        "tune_gc()\n"
        "print(json.dumps([before, [gc.get_threshold(), gc.get_freeze_count()]]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    (threshold_before, frozen_before), (threshold_after, frozen_after) = json.loads(out)
    assert tuple(threshold_before) == (700, 10, 10)  # Python's
    assert frozen_before == 0
    assert tuple(threshold_after) == GC_THRESHOLDS
    assert frozen_after > 1000  # the modules imported so far


async def test_serve_tunes_the_collector_before_opening(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(serve_module, "tune_gc", lambda: calls.append("tune_gc"))

    def from_config(config: Config) -> Roomserver:
        calls.append("open")
        raise RuntimeError("stopped here")

    monkeypatch.setattr(Roomserver, "from_config", from_config)
    with pytest.raises(RuntimeError, match="stopped here"):
        await serve_module.serve(Config())
    assert calls == ["tune_gc", "open"]
