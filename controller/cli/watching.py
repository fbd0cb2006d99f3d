"""`fleetpatch campaign watch`: follow a campaign until it ends, across
controller restarts, and say how it ended in the exit code.

    completed                     exit 0
    aborted                       exit 8
    halted                        exit 9 (a person must resume or abort it;
                                  with --through-halts watch keeps following)
    controller gone too long      exit 3 (after --reconnect-for of retrying)

Without a terminal, each change is one plain line (or, with --json, one
JSON object per line); reconnecting is said on stderr.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from fleetpatch.v1 import admin_pb2

from controller.cli.jsondoc import rfc3339
from controller.errors import ControllerUnavailable, FleetpatchError

WATCH_EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "the campaign completed"),
    (3, "the controller stayed unreachable for --reconnect-for"),
    (5, "no such campaign"),
    (8, "the campaign was aborted"),
    (9, "the campaign halted (unless --through-halts): a person must resume or abort it"),
)
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0


class CampaignAborted(FleetpatchError):
    exit_code = 8


class CampaignHalted(FleetpatchError):
    exit_code = 9


@dataclass(frozen=True)
class Snapshot:
    """What watch reports about a campaign; a change of it is a new line."""

    campaign_id: str
    name: str
    state: str
    halt_reason: str | None
    totals: dict[str, int]

    def line(self) -> str:
        counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.totals.items())
        halted = f" ({self.halt_reason})" if self.halt_reason else ""
        return f"campaign {self.campaign_id} {self.state}{halted}: {counts}"

    def doc(self, at: datetime) -> dict[str, object]:
        return {
            "at": rfc3339(at), "campaign_id": self.campaign_id, "name": self.name,
            "state": self.state, "halt_reason": self.halt_reason, "totals": self.totals,
        }  # fmt: skip


@dataclass
class Watch:
    """The watch loop with its collaborators passed in (tests give a fake
    clock, sleep and controller)."""

    fetch: Callable[[], admin_pb2.Campaign]
    snapshot: Callable[[admin_pb2.Campaign], Snapshot]
    interval: float
    reconnect_for: float
    through_halts: bool = False
    json_out: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], object] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    show: Callable[[admin_pb2.Campaign], None] | None = None  # a terminal's full view

    def run(self) -> None:
        """Follow until the campaign ends; return when it completed, raise
        CampaignAborted, CampaignHalted, or ControllerUnavailable after
        --reconnect-for without an answer (NotFound, TrustFailure pass)."""
        last: Snapshot | None = None
        while True:
            campaign = self._fetch_patiently()
            seen = self.snapshot(campaign)
            if self.show is not None:
                self.show(campaign)
            elif seen != last:
                self._say(seen)
            last = seen
            if seen.state == "completed":
                return
            if seen.state == "aborted":
                raise CampaignAborted(f"campaign {seen.campaign_id} was aborted")
            if seen.state == "halted" and not self.through_halts:
                raise CampaignHalted(
                    f"campaign {seen.campaign_id} halted: {seen.halt_reason or 'no reason given'}"
                    f"; resume it (fleetpatch campaign resume {seen.campaign_id}) or abort it"
                )
            self.sleep(self.interval)

    def _say(self, seen: Snapshot) -> None:
        at = self.now()
        if self.json_out:
            self.out.write(json.dumps(seen.doc(at), sort_keys=True) + "\n")
        else:
            self.out.write(f"{at:%Y-%m-%dT%H:%M:%SZ} {seen.line()}\n")
        self.out.flush()

    def _fetch_patiently(self) -> admin_pb2.Campaign:
        """The campaign; while the controller is unreachable, asked again
        with full-jitter backoff for at most ``reconnect_for`` seconds."""
        failures = 0
        since = 0.0
        while True:
            try:
                campaign = self.fetch()
            except ControllerUnavailable as exc:
                if failures == 0:
                    since = self.monotonic()
                failures += 1
                waited = self.monotonic() - since
                if waited >= self.reconnect_for:
                    raise ControllerUnavailable(
                        f"{exc}; gave up after {waited:.0f}s of reconnecting"
                    ) from None
                delay = self.rng.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(failures, 10)))
                delay = min(delay, max(self.reconnect_for - waited, 0.0))
                self.err.write(f"fleetpatch: {exc}; reconnecting in {delay:.1f}s\n")
                self.err.flush()
                self.sleep(delay)
                continue
            if failures:
                self.err.write(f"fleetpatch: reconnected after {failures} attempt(s)\n")
                self.err.flush()
            return campaign
