"""Python's cyclic garbage collector, set for a long-running controller.

CPython's defaults (thresholds 700, 10, 10) have a busy controller run a
full collection every second or two, and a full collection traverses every
object the process holds: about 58,000 after start-up (modules, classes,
functions), plus about 55 for each idle Watch stream (grpc.aio's call
state, its tasks and coroutines, the stream's generators), 550,000 more
at 10,000 streams. Measured (200 agents checking in back to back, the
collector's time from `gc.callbacks`; README, "Performance"): it took
15-17 % of the controller's CPU beside 10,000 idle streams (9-14 % beside
3,000, 6-7 % without them), most of it in full collections of 0.25 s
each at 3,000 streams, about 0.6 s at 10,000, which also stall every call
for that long.

So:

- What is alive is frozen (`gc.freeze`): never traversed again. At
  start-up, that is the imports, settings, keys and servicers; and every
  REFREEZE_SECONDS everything is collected once (`refreeze`: unfrozen,
  one full collection, frozen again), so the streams opened since, which
  live for hours, are frozen too. A frozen object freed by reference
  counting is freed at once as any other; one left in a reference cycle
  (a frozen call that ended) waits for the next `refreeze`, no longer.
- A full collection waits for FULL_AFTER collections of the middle
  generation instead of 10. The young generations are collected as often
  as before, and CPython still holds a full collection back until what
  was promoted since the last one is a quarter of what that one kept.

Each `refreeze` stalls the event loop for one full collection (about 1 s
at 10,000 streams here), once every REFREEZE_SECONDS instead of several
times a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc

from controller.periodic import every

# Collections of the middle generation before a full one (CPython: 10).
FULL_AFTER = 100
THRESHOLDS = (700, 10, FULL_AFTER)
# How often everything is collected and what is alive frozen again.
REFREEZE_SECONDS = 300.0


def tune() -> None:
    """Set the thresholds and freeze what is alive; call once, when the
    controller has started and before it serves."""
    gc.set_threshold(*THRESHOLDS)
    refreeze()


def refreeze() -> None:
    """Collect everything, the frozen objects included, then freeze what
    is left alive."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


async def refreeze_every(seconds: float, stop: asyncio.Event) -> None:
    """`refreeze` every ``seconds`` until ``stop`` is set (the first after
    ``seconds``: `tune` froze at start-up)."""

    async def step() -> None:
        refreeze()

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    await every(seconds, stop, step, "refreezing the garbage collector")
