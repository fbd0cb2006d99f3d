"""Refusals become a count, not a record each.

A host that refuses every order it is sent (a wrong clock, a key it does
not trust, a hostile agent) can report thousands of refusals a second; one
host once wrote 5,000 `order.refused` records in 4 s. So, per host:

- the first refusal in a window is recorded at once, as before;
- later ones within the window (``window`` after that first one) are only
  counted, keeping the time of the first of them and the last one's order
  id and detail;
- when the window has ended, the count becomes ONE record ("N more
  refusal(s) since T; last: DETAIL"): on the host's next refusal (which
  then opens a new window and is itself recorded at once), on a periodic
  ``due`` call, or at shutdown (``drain``) so that nothing counted is lost.

A host that never stops refusing writes two records per window, however
fast it reports. The detail is the agent's text, already cut at
limits.MAX_REPORT_DETAIL, so a summary stays bounded too. Memory holds
one entry per host that refused within the last window.

Pure: the caller passes the time in and writes the entries it gets back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from controller.audit import AuditEntry

# How long a host's refusals are counted after the one that was recorded;
# controller.toml [audit] refusal_window overrides it.
DEFAULT_WINDOW = timedelta(minutes=10)
ACTION = "order.refused"
OUTCOME = "refused"


@dataclass
class _Window:
    opened: datetime  # the recorded refusal that opened it
    counted: int = 0  # refusals since, not yet written
    since: datetime | None = None  # when the first of those arrived
    last_order: str = ""
    last_detail: str = ""


class RefusalCounter:
    """Per-host refusal windows; each method returns the audit entries to
    append now, in order."""

    def __init__(self, window: timedelta = DEFAULT_WINDOW) -> None:
        if window <= timedelta(0):
            raise ValueError("the refusal window must be positive")
        self.window = window
        self._hosts: dict[str, _Window] = {}

    def refused(self, host_id: str, order_id: str, detail: str, now: datetime) -> list[AuditEntry]:
        """A refusal reported by ``host_id`` (received at ``now``)."""
        current = self._hosts.get(host_id)
        if current is not None and now < current.opened + self.window:
            current.counted += 1
            if current.since is None:
                current.since = now
            current.last_order, current.last_detail = order_id, detail
            return []
        out = [] if current is None else self._summary(host_id, current, now)
        self._hosts[host_id] = _Window(opened=now)
        out.append(AuditEntry(now, f"host:{host_id}", ACTION, order_id or "-", OUTCOME, detail))
        return out

    def due(self, now: datetime) -> list[AuditEntry]:
        """The counts of every window that has ended by ``now``; those hosts
        are forgotten, so their next refusal is recorded at once."""
        out: list[AuditEntry] = []
        for host_id, current in list(self._hosts.items()):
            if now >= current.opened + self.window:
                out += self._summary(host_id, current, now)
                del self._hosts[host_id]
        return out

    def drain(self, now: datetime) -> list[AuditEntry]:
        """Every count not yet written (at shutdown), ended or not."""
        out: list[AuditEntry] = []
        for host_id, current in self._hosts.items():
            out += self._summary(host_id, current, now)
        self._hosts.clear()
        return out

    @property
    def pending(self) -> int:
        """Refusals counted and not yet written, over all hosts."""
        return sum(w.counted for w in self._hosts.values())

    def _summary(self, host_id: str, current: _Window, now: datetime) -> list[AuditEntry]:
        if not current.counted or current.since is None:
            return []
        since = current.since.strftime("%Y-%m-%dT%H:%M:%SZ")
        detail = f"{current.counted} more refusal(s) since {since}; last: {current.last_detail}"
        return [
            AuditEntry(now, f"host:{host_id}", ACTION, current.last_order or "-", OUTCOME, detail)
        ]
