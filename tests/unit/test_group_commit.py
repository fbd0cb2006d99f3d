"""GroupCommit: what arrives while a batch is being written joins the next
one; each caller gets its own item's answer, and a failed write fails
every caller of its batch."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from controller.store import Store
from controller.store.thread import GroupCommit, StoreThread


def _run(tmp_path: Path, fail: bool = False) -> tuple[list[object], list[list[int]]]:
    """Item 0, then items 1-4 submitted while 0's batch is being written
    (its write waits until they are queued): the answers (each item
    doubled, or the exception), and the batches written."""
    written: list[list[int]] = []
    queued = threading.Event()

    def write(store: Store, items: Sequence[int]) -> list[int]:
        written.append(list(items))
        queued.wait(timeout=30)  # the first batch is still being written
        if fail and items[0] != 0:
            raise OSError("disk full")
        return [2 * n for n in items]

    async def main() -> list[object]:
        commit = GroupCommit(StoreThread(Store.open(tmp_path / "c.db")), write, "test writer")
        commit.start()
        first = asyncio.ensure_future(commit.submit(0))
        while not written:  # its write has begun
            await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(commit.submit(n)) for n in range(1, 5)]
        queued.set()
        answers: list[object] = list(await asyncio.gather(first, *rest, return_exceptions=True))
        await commit.close()
        return answers

    return asyncio.run(main()), written


@pytest.mark.timeout(60)
def test_what_arrives_during_a_write_is_the_next_batch(tmp_path: Path) -> None:
    answers, written = _run(tmp_path)
    assert answers == [0, 2, 4, 6, 8]
    assert written == [[0], [1, 2, 3, 4]]  # two transactions, not five


@pytest.mark.timeout(60)
def test_a_failed_write_fails_every_caller_of_its_batch_alone(tmp_path: Path) -> None:
    answers, written = _run(tmp_path, fail=True)
    assert answers[0] == 0
    assert [str(a) for a in answers[1:]] == ["disk full"] * 4
    assert all(isinstance(a, OSError) for a in answers[1:])
    assert written == [[0], [1, 2, 3, 4]]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_the_store_thread_is_named_for_the_os_so_top_and_ps_tell_it_apart(
    tmp_path: Path,
) -> None:
    def own_name(store: Store) -> str:
        return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    async def main() -> str:
        db = StoreThread(Store.open(tmp_path / "c.db"))
        try:
            return await db.call(own_name)
        finally:
            db.close()

    assert asyncio.run(main()) == "store"
