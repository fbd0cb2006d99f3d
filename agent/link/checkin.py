"""Check-ins: tell the controller who we are, what is installed and how we
are, and learn when to come back. The full inventory travels only when its
hash differs from the one the controller last acknowledged.

When a check-in fails the loop backs off (exponential, full jitter), never
longer than max_retry_delay nor than the check-in interval the controller
last announced: a fleet that lost its controller comes back within one
interval, spread over it. An overloaded controller (RESOURCE_EXHAUSTED
with a retry delay) is left alone for once to twice the delay it asked
for, instead; that is logged once per episode, not at every attempt.

The interval the controller announces is taken within MIN_INTERVAL and
MAX_INTERVAL: a broken or hostile controller can neither make the host
check in (and list its packages) in a tight loop nor send it away for
years, nor crash it with a Duration no datetime can hold."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fleetpatch.inventory import inventory_hash
from fleetpatch.v1 import agent_pb2, types_pb2
from google.protobuf.duration_pb2 import Duration

from agent.backends import packages
from agent.errors import CommandFailed, ControllerUnavailable, Overloaded, TransientError
from agent.host import facts as hostfacts
from agent.host import updates
from agent.host.health import resource_checks, summarize
from agent.link import convert
from agent.link.backoff import retry_delay
from agent.link.client import ControllerClient
from agent.link.renewal import Renewal
from agent.orders.journal import Journal
from agent.statedir import AgentConfig

log = logging.getLogger(__name__)

# The check-in intervals the agent takes from the controller; one outside
# is taken as the nearest bound. The floor is the controller's own
# (`checkin.interval` is at least 1s, and its answers never under a
# second: controller.api.checkin.Pace); the ceiling keeps a host that a
# controller sent away coming back daily.
MIN_INTERVAL = timedelta(seconds=1)
MAX_INTERVAL = timedelta(days=1)


def announced_interval(duration: Duration) -> tuple[timedelta, bool]:
    """The wait before the next check-in that a controller's ``next_checkin``
    comes to, within MIN_INTERVAL and MAX_INTERVAL, and whether it was
    outside them. Never raises, whatever the Duration holds (protobuf's
    ToTimedelta overflows on some, and the largest valid one overflows the
    datetime it is added to)."""
    seconds = duration.seconds + duration.nanos / 1e9
    if seconds < MIN_INTERVAL.total_seconds():
        return MIN_INTERVAL, True
    if seconds > MAX_INTERVAL.total_seconds():
        return MAX_INTERVAL, True
    # As ToTimedelta does it (to the microsecond, toward zero), within range.
    return timedelta(seconds=duration.seconds, microseconds=int(duration.nanos / 1000)), False


def _spelled(duration: Duration) -> str:
    """A Duration as a log line shows it: ``300s``, ``0.500s``."""
    if duration.nanos == 0:
        return f"{duration.seconds}s"
    return f"{duration.seconds + duration.nanos / 1e9:.3f}s"


@dataclass(frozen=True)
class CheckInReport:
    inventory_sent: bool
    package_count: int
    healthy: bool
    next_in: timedelta
    work_order: types_pb2.SignedEnvelope | None = None


class CheckIns:
    def __init__(
        self,
        config: AgentConfig,
        journal: Journal,
        client: ControllerClient,
        collect_facts: Callable[[], hostfacts.HostFacts] | None = None,
        take_inventory: Callable[[str], packages.Inventory] = packages.take_inventory,
        rng: random.Random | None = None,
        on_order: Callable[[types_pb2.SignedEnvelope], object] | None = None,
        between: Callable[[], object] | None = None,
        on_keys: Callable[[agent_pb2.CheckInResponse], object] | None = None,
        after: Callable[[], object] | None = None,
        renewal: Renewal | None = None,
    ) -> None:
        """``after``: called after every check-in attempt of `run`, once its
        outcome is in the journal (the agent's metrics textfile)."""
        self._config = config
        self._journal = journal
        self._client = client
        # The facts name the package manager agent.toml sets, if it does.
        self._collect_facts = collect_facts or (lambda: hostfacts.collect(config.package_manager))
        self._take_inventory = take_inventory
        self._rng = rng or random.Random()
        self._on_order = on_order
        self._between = between
        self._on_keys = on_keys
        self._after = after
        self._renewal = renewal
        self._out_of_range = False  # the last announced interval was: warned once

    def once(self) -> CheckInReport:
        """One check-in, after renewing the host's certificate when it is
        due. Raises TransientError (worth retrying), Refused (the
        certificate expired: CertificateExpired)."""
        if self._renewal is not None:
            self._renewal.maybe_renew()
        facts = self._collect_facts()
        inventory = self._take_inventory(facts.package_manager)
        installed = inventory.packages
        current = inventory_hash(installed, inventory.sources)
        health = summarize(resource_checks(self._config.health))
        request = agent_pb2.CheckInRequest(
            facts=convert.facts_to_pb(facts),
            inventory_hash=current,
            health=convert.health_to_pb(health),
            highest_sequence=self._journal.highest_sequence(),
        )
        if self._renewal is not None:
            request.ca_trust_hash = self._renewal.trust_hash()
        if self._renewal is not None and self._renewal.failures:
            request.renewal_failures = self._renewal.failures
            request.renewal_error = self._renewal.last_error[:2000]
        send_full = current != self._journal.checkin_state().acked_inventory_hash
        if send_full:
            request.inventory.CopyFrom(convert.inventory_to_pb(inventory))
        self._add_updates(request)
        response = self._client.check_in(request)
        if response.inventory_required and not send_full:
            # The controller lost or never had our inventory (a restored
            # database, say): send it in full at once.
            log.info("controller asked for the full inventory")
            request.inventory.CopyFrom(convert.inventory_to_pb(inventory))
            send_full = True
            response = self._client.check_in(request)
        if (response.signing_keys or response.withdrawn_keys) and self._on_keys is not None:
            self._on_keys(response)
        if response.HasField("ca_trust") and self._renewal is not None:
            # A CA rotation: trust what the controller vouches for, and
            # renew onto the new CA now rather than at two thirds.
            self._renewal.trust(response.ca_trust)
            self._renewal.maybe_renew()
        self._journal.ack_updates(response.known_updates_hash)
        next_in = self._next_in(response.next_checkin)
        self._journal.record_checkin(response.known_inventory_hash, datetime.now(UTC) + next_in)
        order = response.work_order if response.HasField("work_order") else None
        return CheckInReport(send_full, len(installed), health.healthy, next_in, order)

    def _next_in(self, announced: Duration) -> timedelta:
        """`announced_interval`, with a warning when the controller's value
        is out of range: once until it is in range again, not at every
        check-in."""
        next_in, clamped = announced_interval(announced)
        if clamped and not self._out_of_range:
            log.warning("check-in: the controller announced the next check-in in %s, not "
                        "within %.0fs to %.0fs; using %.0fs until it announces one within",
                        _spelled(announced), MIN_INTERVAL.total_seconds(),
                        MAX_INTERVAL.total_seconds(), next_in.total_seconds())  # fmt: skip
        elif not clamped and self._out_of_range:
            log.info("check-in: the controller's check-in interval is within range again")
        self._out_of_range = clamped
        return next_in

    def _add_updates(self, request: agent_pb2.CheckInRequest) -> None:
        """The last scan's hash, and the list itself when the controller does
        not hold that one yet (nothing before the first scan)."""
        scanned, at = self._journal.scan()
        if at is None:
            return
        found = updates.from_json(scanned)
        request.updates_hash = updates.digest(found)
        if request.updates_hash != self._journal.acked_updates_hash():
            request.updates.CopyFrom(convert.updates_to_pb(found, at))

    def run(self, stop: threading.Event, wake: threading.Event | None = None) -> None:
        """Check in until ``stop`` is set. Network and package-manager
        trouble is retried with backoff; a refusal (revoked, say) raises.
        ``wake`` (set with ``stop`` too) brings the next check-in forward:
        a nudge from the controller (agent.link.watch)."""
        failures = 0
        overloaded = False
        interval = self._journal.checkin_state().interval
        sleeper = stop if wake is None else wake
        while not stop.is_set():
            if wake is not None:
                wake.clear()  # this check-in answers any nudge so far
            if self._between is not None:
                self._between()
            try:
                report = self.once()
            except Overloaded as exc:
                failures += 1
                delay = self._retry_delay(failures, interval, exc.retry_after)
                self._journal.record_checkin_failure(str(exc))
                if not overloaded:
                    log.warning("check-in: %s; checking in again in %.0fs, and waiting as "
                                "long as it asks while it stays so", exc, delay)  # fmt: skip
                else:
                    log.debug("check-in: still overloaded; again in %.0fs", delay)
                overloaded = True
            except (TransientError, CommandFailed) as exc:
                failures += 1
                # A controller whose database is down says when to come back.
                asked = exc.retry_after if isinstance(exc, ControllerUnavailable) else None
                delay = self._retry_delay(failures, interval, asked)
                self._journal.record_checkin_failure(str(exc))
                log.warning("check-in failed (%s); retrying in %.0fs", exc, delay)
            else:
                failures = 0
                if overloaded:
                    log.info("check-in: the controller takes check-ins again")
                overloaded = False
                interval = report.next_in
                delay = report.next_in.total_seconds()
                log.info(
                    "checked in (%s, %s); next in %.0fs",
                    "inventory sent" if report.inventory_sent else "inventory unchanged",
                    "healthy" if report.healthy else "UNHEALTHY",
                    delay,
                )
                if report.work_order is not None and self._on_order is not None:
                    self._on_order(report.work_order)
                    continue  # check in again at once: report the outcome, get the next
            finally:
                if self._after is not None:
                    self._after()  # the attempt's outcome is in the journal by now
            sleeper.wait(delay)

    def _retry_delay(
        self, failures: int, interval: timedelta | None, retry_after: float | None = None
    ) -> float:
        return retry_delay(
            failures,
            self._rng,
            max_delay=self._config.timing.max_retry_delay.total_seconds(),
            interval=None if interval is None else interval.total_seconds(),
            retry_after=retry_after,
        )
