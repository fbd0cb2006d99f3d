"""How `fleetpatch-sim load`'s worker processes end their agents: all of
them run to the end, or stop together when the parent (on Ctrl-C) sets the
shared stop; an agent's own failure is the run's (test_sim_load.py sends a
real Ctrl-C)."""

from __future__ import annotations

import asyncio
import multiprocessing

import pytest

from simulator.load import _all_of


async def _forever() -> None:
    await asyncio.sleep(3600)


def test_the_parent_stop_cancels_every_agent():
    stop = multiprocessing.get_context("spawn").Event()

    async def run() -> list[asyncio.Task[None]]:
        agents = [asyncio.ensure_future(_forever()) for _ in range(3)]
        asyncio.get_running_loop().call_later(0.2, stop.set)
        await _all_of(agents, stop)
        return agents

    agents = asyncio.run(asyncio.wait_for(run(), 30))
    assert all(agent.cancelled() for agent in agents)


def test_without_a_stop_every_agent_runs_to_its_end():
    async def run() -> list[asyncio.Task[None]]:
        agents = [asyncio.ensure_future(asyncio.sleep(0.05 * n)) for n in range(3)]
        await _all_of(agents, None)
        return agents

    agents = asyncio.run(asyncio.wait_for(run(), 30))
    assert all(agent.done() and not agent.cancelled() for agent in agents)
    asyncio.run(_all_of([], None))  # a process with no agents has nothing to wait for


def test_an_agent_failure_ends_the_others_at_once():
    async def fails() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("an agent's own bug")

    async def run() -> None:
        await _all_of([asyncio.ensure_future(_forever()), asyncio.ensure_future(fails())], None)

    with pytest.raises(RuntimeError, match="own bug"):
        asyncio.run(asyncio.wait_for(run(), 30))  # not the hour the other agent would take
