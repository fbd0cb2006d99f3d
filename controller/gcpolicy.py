"""Python's cyclic garbage collector, set for a long-running controller.

CPython's defaults (thresholds 700, 10, 10) have a busy controller run a
full collection every second or two, and a full collection traverses every
object the process holds: about 58,000 after start-up (modules, classes,
functions), plus about 55 for each idle Watch stream (grpc.aio's call
state, its tasks and coroutines, the stream's generators), 166,000 more at
3,000 streams. Measured (200 agents checking in back to back, the
collector's time from `gc.callbacks`; README, "Performance"): it took
9-14 % of the controller's CPU beside 3,000 idle streams (5-8 % without
them), most of it in full collections of 0.25 s each (0.5-0.7 s at
10,000 streams), which also stall every call for that long.

Two changes, made once the controller has started:

- What is alive then (imports, settings, keys, servicers) is frozen
  (`gc.freeze`): it lives as long as the process and is never traversed
  again. Objects frozen and freed later are freed as usual (reference
  counting); only a frozen object left in a reference cycle would stay.
- A full collection waits for FULL_AFTER collections of the middle
  generation instead of 10. The young generations are collected as often
  as before (their garbage is collected as soon as ever), and a full
  collection still comes when that many young collections have passed
  *and* what was promoted since the last one is a quarter of what it
  kept (CPython's own rule): the garbage that reaches the oldest
  generation, still collected, waits longer, a bounded amount
  (measured: steady RSS unchanged, README).
"""

from __future__ import annotations

import gc

# Collections of the middle generation before a full one (CPython: 10).
FULL_AFTER = 100
THRESHOLDS = (700, 10, FULL_AFTER)


def tune() -> None:
    """Freeze what is alive now and set the thresholds; call once, when
    the controller has started and before it serves."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
