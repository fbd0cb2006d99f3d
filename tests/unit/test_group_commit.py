"""GroupCommit: what arrives while a batch is written joins the next one;
with a linger, a small batch waits for company first."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from controller.store import Store
from controller.store.thread import LINGER_BELOW, GroupCommit, StoreThread


def _doubling(tmp_path: Path, linger: float) -> tuple[GroupCommit[int, int], list[list[int]]]:
    """A GroupCommit over a real store thread whose write answers each item
    doubled and records the batches it was given."""
    written: list[list[int]] = []

    def write(store: Store, items: Sequence[int]) -> list[int]:
        written.append(list(items))
        return [2 * n for n in items]

    return GroupCommit(StoreThread(Store.open(tmp_path / "c.db")), write, "test writer",
                       linger=linger), written  # fmt: skip


def _staggered(tmp_path: Path, linger: float) -> tuple[list[int], list[list[int]]]:
    """Items 0-4 submitted one event-loop turn apart: their answers, and
    the batches written."""

    async def main() -> tuple[list[int], list[list[int]]]:
        commit, written = _doubling(tmp_path, linger)
        commit.start()

        async def one(n: int) -> int:
            for _ in range(n):
                await asyncio.sleep(0)
            return await commit.submit(n)

        answers = await asyncio.gather(*(one(n) for n in range(5)))
        await commit.close()
        return answers, written

    return asyncio.run(main())


def test_without_a_linger_the_first_item_is_written_alone(tmp_path: Path) -> None:
    answers, written = _staggered(tmp_path, linger=0.0)
    assert answers == [0, 2, 4, 6, 8]
    assert written[0] == [0]  # nothing waited for it
    assert sorted(n for batch in written for n in batch) == [0, 1, 2, 3, 4]


def test_a_lingering_small_batch_takes_in_what_arrives_meanwhile(tmp_path: Path) -> None:
    answers, written = _staggered(tmp_path, linger=0.5)
    assert answers == [0, 2, 4, 6, 8]
    assert written == [[0, 1, 2, 3, 4]]  # one transaction, in order of arrival


@pytest.mark.timeout(30)
def test_a_full_batch_does_not_linger(tmp_path: Path) -> None:
    async def main() -> tuple[float, list[list[int]]]:
        commit, written = _doubling(tmp_path, linger=60.0)
        commit.start()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.gather(*(commit.submit(n) for n in range(LINGER_BELOW)))
        took = loop.time() - began
        await commit.close()
        return took, written

    took, written = asyncio.run(main())
    assert written == [list(range(LINGER_BELOW))]
    assert took < 30  # not the minute a small batch would wait
