"""`campaign watch`'s loop with a fake controller, clock and sleep: the exit
it makes for each way a campaign ends, a line per change, and reconnecting
with backoff for as long as it was told to."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fleetpatch.v1 import admin_pb2

from controller.cli.watching import CampaignAborted, CampaignHalted, Snapshot, Watch
from controller.errors import ControllerUnavailable

DOWN = object()


class Script:
    """Answers in turn: a state (a campaign in it) or DOWN (unreachable)."""

    def __init__(self, *answers: object) -> None:
        self.answers: Iterator[object] = iter(answers)
        self.clock = 0.0
        self.slept: list[float] = []

    def fetch(self) -> admin_pb2.Campaign:
        answer = next(self.answers)
        if answer is DOWN:
            raise ControllerUnavailable("cannot reach the controller at h:1: down")
        assert isinstance(answer, str)
        halt = "ring 0 failed" if answer == "halted" else ""
        return admin_pb2.Campaign(campaign_id="c-1", name="n", state=answer, halt_reason=halt)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock += seconds


def _watch(script: Script, **options: object) -> tuple[Watch, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    options = {"reconnect_for": 60.0, **options}
    watch = Watch(
        fetch=script.fetch,
        snapshot=lambda c: Snapshot(c.campaign_id, c.name, c.state, c.halt_reason or None,
                                    {"eligible": 2}),
        interval=2.0, out=out, err=err,
        now=lambda: datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
        monotonic=lambda: script.clock, sleep=script.sleep, rng=random.Random(1),
        **options,  # type: ignore[arg-type]
    )  # fmt: skip
    return watch, out, err


def test_completed_returns_after_one_line_per_change():
    script = Script("running", "running", "running", "completed")
    watch, out, _ = _watch(script)
    watch.run()
    assert out.getvalue().splitlines() == [
        "2026-12-01T12:00:00Z campaign c-1 running: eligible 2",
        "2026-12-01T12:00:00Z campaign c-1 completed: eligible 2",
    ]


@pytest.mark.parametrize(
    ("state", "error", "code"), [("aborted", CampaignAborted, 8), ("halted", CampaignHalted, 9)]
)
def test_aborted_and_halted_end_the_watch_with_their_own_codes(state, error, code):
    watch, _, _ = _watch(Script("running", state))
    with pytest.raises(error) as caught:
        watch.run()
    assert caught.value.exit_code == code


def test_through_halts_follows_a_halted_campaign_until_it_completes():
    watch, out, _ = _watch(Script("halted", "halted", "running", "completed"), through_halts=True)
    watch.run()
    assert [line.split()[3].rstrip(":") for line in out.getvalue().splitlines()] == [
        "halted", "running", "completed"
    ]  # fmt: skip


def test_json_is_one_object_per_line():
    watch, out, _ = _watch(Script("running", "completed"), json_out=True)
    watch.run()
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["state"] for d in docs] == ["running", "completed"]
    assert docs[0] == {
        "at": "2026-12-01T12:00:00Z", "campaign_id": "c-1", "name": "n", "state": "running",
        "halt_reason": None, "totals": {"eligible": 2},
    }  # fmt: skip


def test_a_controller_restart_is_followed_with_backoff():
    script = Script("running", DOWN, DOWN, DOWN, "running", "completed")
    watch, out, err = _watch(script)
    watch.run()
    assert len(out.getvalue().splitlines()) == 2  # the outage is no change of the campaign
    assert err.getvalue().count("reconnecting in") == 3
    assert "reconnected after 3 attempt(s)" in err.getvalue()
    backoffs = script.slept[1:4]
    assert all(0 <= s <= 30 for s in backoffs)


def test_a_controller_gone_longer_than_reconnect_for_exits_unavailable():
    script = Script("running", *([DOWN] * 1000))
    watch, _, _ = _watch(script, reconnect_for=20.0)
    with pytest.raises(ControllerUnavailable, match="gave up after 20s"):
        watch.run()
    assert script.clock == pytest.approx(22.0)  # one interval, then exactly 20s of retrying
