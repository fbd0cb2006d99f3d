"""controller.periodic.every: a task run every so often, which a failed
round neither ends nor makes repeat itself in the log."""

from __future__ import annotations

import asyncio
import logging

from controller.errors import ControllerUnavailable
from controller.periodic import every


def _run(step_error: Exception, what: str, rounds: int) -> int:
    """``every`` with a step failing so, stopped after ``rounds`` rounds: how
    many rounds ran."""
    ran = 0

    async def main() -> None:
        stop = asyncio.Event()

        async def step() -> None:
            nonlocal ran
            ran += 1
            if ran >= rounds:
                stop.set()
            raise step_error

        await asyncio.wait_for(every(0.001, stop, step, what), 30)

    asyncio.run(main())
    return ran


def test_a_database_out_of_reach_is_one_line_per_interval_and_every_round_runs(caplog):
    with caplog.at_level(logging.WARNING, logger="controller.periodic"):
        ran = _run(ControllerUnavailable("the database is unavailable"), "db task", 50)
    assert ran == 50  # each round ran, on time
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["db task failed: the database is unavailable; trying again in 0s"]


def test_anything_else_is_logged_each_time_with_its_trace(caplog):
    with caplog.at_level(logging.WARNING, logger="controller.periodic"):
        ran = _run(RuntimeError("a bug"), "buggy task", 3)
    assert ran == 3
    assert [r.exc_info is not None for r in caplog.records] == [True] * 3
