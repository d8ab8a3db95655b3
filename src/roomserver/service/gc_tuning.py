"""The garbage collector as ``roomserver serve`` runs it.

The input path allocates many short-lived containers (parsed events, per-event values,
outputs), nearly all freed by reference counting, not by the collector. With Python's default
thresholds, (700, 10, 10), the young-generation collections still run every 700 net
allocations, and they cost the event loop about 15 µs per event (``bench/bench_input.py``,
measured with ``gc.callbacks``); a full collection walks every cached object and pauses the
loop for tens of milliseconds. The event loop is the one thread that runs Python and the
resource the whole process is bound by (``docs/performance.md``, "The GIL is the saturated
resource"), so the service collects less often: cyclic garbage lives a little longer, which
costs a few megabytes at most.

``tune_gc`` sets ``GC_THRESHOLDS`` and freezes what exists when it is called (modules,
configuration): those objects are never walked again. ``roomserver serve`` calls it before
opening the roomserver; an application embedding ``Roomserver`` may call it too (it changes
the whole process's collector, so the library does not do it on its own).
"""

from __future__ import annotations

import gc

#: The collector's thresholds in the service (generation 0, 1, 2).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Set ``GC_THRESHOLDS`` and move every object that exists now out of the collector's
    reach (``gc.freeze``)."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()
