"""Work the controller does now and then while it serves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from controller.errors import ControllerUnavailable
from controller.quietlog import Quiet

log = logging.getLogger(__name__)
# While the database is out of reach every task fails every round: a line
# per task per interval, with how many were not said.
_quiet = Quiet(log)


async def every(
    seconds: float, stop: asyncio.Event, step: Callable[[], Awaitable[object]], what: str
) -> None:
    """Run ``step`` at once, then every ``seconds``, until ``stop`` is set.
    A step that fails is logged (``what`` failed) and the next one runs on
    time: one bad round must not end the loop for good."""
    while not stop.is_set():
        try:
            await step()
        except ControllerUnavailable as exc:  # the database, say: one line, not a traceback
            _quiet.say(what, "%s failed: %s; trying again in %.0fs", what, exc, seconds)
        except Exception:
            log.exception("%s failed; trying again in %.0fs", what, seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
