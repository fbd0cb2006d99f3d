"""The event loop: one campaign on one fleet, in virtual time.

A heap of events ordered by (time, kind, sequence); nothing else decides
the order, so a run is deterministic for a seed. The controller's side
mirrors `controller.engine.CampaignEngine` step by step, calling the same
pure functions:

    check-in      a host with no assignment asks `decide` (only while the
                  campaign is running, as the engine's live list does)
    result        a report updates the assignment (only while in flight: a
                  late result after a time-out does not count), then the
                  campaign is evaluated (`lifecycle.verdict`)
    tick          every ``campaign_tick``: in-flight orders past
                  `lifecycle.report_due_by` are timed out, then the campaign
                  is evaluated; ticks stop while the controller is down
    silence       a host turns silent at `lifecycle.silent_after`; both it
                  and the time-outs count from the controller's restart at
                  the earliest, as the engine's ``watching_since`` does
    resume        what a person does (scenario [operator]): what halted it
                  is accepted (`lifecycle.accepted_on_resume`)

Events grow with decisions, not with check-ins: hosts that `decide`
cannot tell apart wait in one room (`waiting`), and one of them asks for
all: after ``Wait(until=T)`` the room sleeps until T, after ``Wait(None)``
until the counts or the campaign's state change; a host in flight is a
chain of agent steps (`agentmodel`). Silence is a timer from a host's last
check-in, set when it stops checking in (an order, an outage, the
controller down); a tick is an event only when something is due.
`Settings.every_check_in` runs the naive way instead (every waiting host
asks at every check-in), to compare: a test checks both give the same outcome.

One module on purpose: the handlers below share one mutable state (the
hosts, the counts, the heap), and each is a few lines; spread over files
they would be harder to follow, not easier.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

from agent.orders.states import TERMINAL, Event, State, next_state
from controller.campaigns import (
    Assign,
    CampaignSpec,
    CampaignState,
    HaltReason,
    Skip,
    SkipReason,
    Wait,
    WaitReason,
    decide,
)
from controller.campaigns.counts import COUNTED, ELIGIBLE, IN_FLIGHT, SILENT, UNREACHABLE, Counts
from controller.campaigns.lifecycle import (
    Halt,
    accepted_on_resume,
    order_timed_out,
    report_due_by,
    silent_after,
    verdict,
)
from controller.campaigns.spec import Analysis
from controller.campaigns.tallies import Reading
from controller.campaigns.windows import WindowCache
from controller.model import OUTCOME_STATUS, PATCHED, AssignmentStatus

from .agentmodel import Agent, Order, rehearsed_patch
from .errors import ModelGap, SimError
from .failures import FailureModel
from .fleet import FleetHost
from .hosts import SimHost
from .outcome import Outcome, Recorder, build_outcome
from .population import populate
from .scenario import Operator, Series
from .timeline import Timeline, micros
from .waiting import MAX_HOSTS, WaitingRoom

# Event kinds, in the order events of one instant are handled.
(
    CONTROLLER, OUTAGE, STEP, REPORT, RECONNECT, ROOM_WAKE, CHECK_IN, SILENCE, TIMEOUT, ANALYSE,
    EVALUATE, RESUME, SWEEP,
) = range(13)  # fmt: skip
# What an answer means for waking a host (and its room, when it was the probe).
_DONE, _SLEEP, _BLOCKED, _STUCK, _GONE = range(5)


@dataclass(frozen=True)
class Settings:
    """Everything about a run that is not the campaign, the fleet or the failures."""

    name: str
    start: datetime
    duration: timedelta
    horizon: timedelta
    checkin_interval: timedelta
    campaign_tick: timedelta
    seed: int
    operator: Operator = field(default_factory=Operator)
    # What each [[rollout.analysis]] reads over time (scenario [analysis]);
    # one without a series is rehearsed as holding.
    analysis: Mapping[str, Series] = field(default_factory=dict)
    # The naive baseline, for benchmarks: every host not yet assigned checks
    # in and asks `decide` at every check-in, as on a real controller.
    every_check_in: bool = False


@dataclass(frozen=True)
class Progress:
    """How far a run has got (for a progress line; never part of a result)."""

    now: timedelta
    horizon: timedelta
    events: int
    assigned: int
    finished: int
    targeted: int


class Simulation:
    """Build with the campaign, the fleet, the failures and the settings; `run` once."""

    def __init__(
        self,
        campaign: CampaignSpec,
        fleet: Sequence[FleetHost],
        failures: FailureModel,
        settings: Settings,
        progress: Callable[[Progress], None] | None = None,
    ) -> None:
        """Raises SimError when the settings cannot be simulated faithfully."""
        self.spec = campaign
        self.settings = settings
        self.failures = failures
        self._progress = progress
        self.time = Timeline(settings.start, settings.checkin_interval, settings.campaign_tick,
                             failures)  # fmt: skip
        self._interval = self.time.interval
        self._silent_after = micros(campaign.rollout.silent_after)
        self._report_timeout = micros(campaign.rollout.report_timeout)
        self._verify_timeout = micros(campaign.verify.timeout)
        self._horizon = micros(settings.horizon)
        self._end = self._horizon  # where this call of run stops
        if self._interval >= self._silent_after:
            raise SimError(
                f"the check-in interval ({settings.checkin_interval}) is not shorter than the "
                f"campaign's rollout.silent_after ({campaign.rollout.silent_after}): every "
                "healthy host would count as silent between check-ins and the controller "
                "would halt the campaign; shorten the interval or lengthen silent_after"
            )
        if len(fleet) > MAX_HOSTS:
            raise SimError(f"at most {MAX_HOSTS:,} hosts can be simulated, not {len(fleet):,}")
        self._rng = random.Random(settings.seed)
        self.to_datetime = self.time.to_datetime
        self._heap: list[tuple[int, int, int, object]] = []
        self._seq = 0
        self.now = 0
        self._agent = Agent(
            rehearsed_patch(campaign), self._verify_timeout, self.to_datetime,
            agent_update=campaign.agent_update is not None,
        )  # fmt: skip
        self._windows = WindowCache()
        people = populate(campaign, fleet, failures, self._rng, self._interval)
        self.hosts = people.hosts
        self.fleet_size = people.fleet_size
        self._rooms, self._by_ring, self._later = people.rooms, people.by_ring, people.later
        self._offline = people.offline
        self.counts = Counts(people.cells)
        for host in self.hosts:
            self.counts.add(host.cell, ELIGIBLE, 1)
        self._ring_done: dict[int, bool] = {}
        self._evaluated = -1
        self._resumes_left = settings.operator.resumes
        self._resume_due = False
        self._ctl_down = False
        # When the controller last started watching (`campaigns.lifecycle`):
        # it has always been, until a simulated outage of it ends.
        self._watching_since: datetime | None = None
        self._seeded = False
        self.in_flight = 0
        self.events = 0
        self.decisions = 0
        self.rec = Recorder(len(self.hosts))

    # -- set-up ------------------------------------------------------------------

    def _push(self, t: int, kind: int, payload: object) -> int:
        self._seq += 1
        heapq.heappush(self._heap, (t, kind, self._seq, payload))
        return self._seq

    def _seed(self) -> None:
        for host in self.hosts:
            host.last_seen = host.anchor
        for host, fh in self._offline:
            host.down += 1  # for good
            host.last_seen = None if fh.last_seen is None else self.time.at(fh.last_seen)
            self._silence_from(host, host.last_seen)
        offline = {h.index for h, _ in self._offline}
        for host in self.hosts:
            if host.index in offline:
                continue
            if self.settings.every_check_in:
                first = host.anchor + self._interval
                host.next_check_in = self._push(first, CHECK_IN, host)
            else:
                self._park(host)  # its room's probe asks for it at the first check-in
        for room in self._rooms.values():
            room.asleep_until = 0  # until the first check-ins
            self._push(0, ROOM_WAKE, room)
        start = self.settings.start
        for index, outage in enumerate(self.failures.outages):
            matching = [
                h for h in self.hosts
                if outage.selector.matches(h.facts.host_id, h.ring, h.cell[1], h.facts.os_id,
                                           frozenset())
            ]  # fmt: skip
            chosen = self._rng.sample(matching, round(outage.share * len(matching)))
            chosen.sort(key=lambda h: h.index)
            self._push(self.time.at(outage.start.resolve(start)), OUTAGE, (chosen, True))
            if outage.end is not None:
                self._push(self.time.at(outage.end.resolve(start)), OUTAGE, (chosen, False))
            self.rec.outages.append((index, len(chosen)))
        for begin, end, _ in self.time.down:
            self._push(begin, CONTROLLER, True)
            self._push(end, CONTROLLER, False)
        self._push(0, EVALUATE, None)
        if self.spec.rollout.analysis:
            self._push(0, ANALYSE, None)
        self._push(self._interval, SWEEP, None)
        if self.spec.deadline is not None:
            self._push(self.time.tick_at_or_after(self.time.at(self.spec.deadline)), EVALUATE, None)

    # -- the loop ----------------------------------------------------------------

    def run(self, stop_at: timedelta | None = None) -> Outcome:
        """Simulate until the campaign completes, halts for good, or the
        horizon (or ``stop_at``, to look at a run midway: then call `resume`
        to go on). Raises ModelGap when the agent enters a state with no model."""
        if stop_at is not None:
            self._end = min(self._end, micros(stop_at))
        if not self._seeded:
            self._seed()
            self._seeded = True
        return self._loop()

    def resume(self, stop_at: timedelta | None = None) -> Outcome:
        """Go on after `run` stopped at ``stop_at``."""
        self._end = self._horizon
        return self.run(stop_at)

    def _loop(self) -> Outcome:
        heap = self._heap
        pop = heapq.heappop
        every = 200_000
        while heap and not self._halted_for_good():
            if heap[0][0] > self._end:
                self.now = max(self.now, self._end)
                break
            t, kind, seq, payload = pop(heap)
            self.now = t
            self.events += 1
            if kind == STEP:
                self._step(cast(SimHost, payload))
            elif kind == CHECK_IN:
                self._on_check_in(cast(SimHost, payload), seq)
            elif kind == SILENCE:
                self._on_silence(cast(tuple[SimHost, int], payload))
            elif kind == TIMEOUT:
                self._on_timeout(cast(SimHost, payload))
            else:
                self._rare(kind, payload)
            if self._progress is not None and self.events % every == 0:
                self._progress(self._progress_now())
        if self._progress is not None:
            self._progress(self._progress_now())
        return build_outcome(self)

    def _rare(self, kind: int, payload: object) -> None:
        {
            REPORT: self._on_report,
            RECONNECT: self._on_reconnect,
            EVALUATE: self._on_evaluate,
            SWEEP: self._on_sweep,
            OUTAGE: self._on_outage,
            CONTROLLER: self._on_controller,
            RESUME: self._on_resume,
            ROOM_WAKE: self._on_room_wake,
            ANALYSE: self._on_analyse,
        }[kind](payload)

    def _on_report(self, payload: object) -> None:
        host, state, at = cast(tuple[SimHost, State, int], payload)
        self._deliver(host, state, at)

    def _on_evaluate(self, payload: object) -> None:
        if not self._ctl_down:
            self._evaluate()

    def _on_analyse(self, payload: object) -> None:
        """`CampaignEngine._analyse`: every analysis read at once, every
        ``rollout.analysis_interval`` (while the controller is up)."""
        self._push(self.now + micros(self.spec.rollout.analysis_interval), ANALYSE, None)
        if not self._ctl_down and self.counts.state is CampaignState.RUNNING:
            self._read_analyses()

    def _read_analyses(self) -> None:
        at = self.to_datetime(self.now)
        for item in self.spec.rollout.analysis:
            series = self.settings.analysis.get(item.name)
            value = _value_at(series, at - self.settings.start) if series else _holding(item)
            self.counts.read(item.name, Reading(value, at))
        self._evaluate()
        for room in self._rooms.values():
            self._kick(room)

    def _on_sweep(self, payload: object) -> None:
        """Hosts waiting for the counts ask again at their check-ins anyway: a
        safety net, once a check-in interval, should a change not wake them."""
        for room in self._rooms.values():
            self._kick(room)
        if self.counts.state is not CampaignState.COMPLETED:
            self._push(self.now + self._interval, SWEEP, None)

    def _on_outage(self, payload: object) -> None:
        hosts, begin = cast(tuple[list[SimHost], bool], payload)
        for host in hosts:
            if begin:
                self._lose(host)
            else:
                self._regain(host)

    def _halted_for_good(self) -> bool:
        state = self.counts.state
        if state is CampaignState.COMPLETED:
            return True
        return state is CampaignState.HALTED and not self._resume_due and self.in_flight == 0

    def _progress_now(self) -> Progress:
        return Progress(
            now=timedelta(microseconds=self.now),
            horizon=self.settings.horizon,
            events=self.events,
            assigned=self.rec.assigned,
            finished=self.rec.finished,
            targeted=len(self.hosts),
        )

    # -- check-ins and decisions --------------------------------------------------

    def _on_check_in(self, host: SimHost, seq: int) -> None:
        if host.next_check_in != seq:
            return  # superseded by a later plan for this host
        host.next_check_in = -1
        if host.reachable:
            self._check_in(host)
        else:
            self._probed(host, _GONE, 0)  # it asks again when it reconnects

    def _check_in(self, host: SimHost) -> None:
        """The controller sees the host now (`CampaignEngine.order_for`)."""
        answer, until = self._ask(host)
        self._probed(host, answer, until)

    def _probed(self, host: SimHost, answer: int, until: int) -> None:
        """Act on the answer for ``host``: for itself, or, when it was its
        room's probe, for the whole room (see `waiting`)."""
        room = host.room
        if self.settings.every_check_in:
            if answer in (_SLEEP, _BLOCKED) and host.reachable:
                t = self.now + self._interval
                if t <= self._horizon:
                    host.next_check_in = self._push(t + self.time.latency(t), CHECK_IN, host)
            return
        if room.probe != host.index:
            if answer == _SLEEP:
                self._sleep_until(host, until)
            elif answer == _BLOCKED:
                self._park(host)
            return
        room.chain = False
        room.probe = -1
        if answer in (_SLEEP, _BLOCKED, _STUCK):
            self._park(host)
        if answer == _SLEEP:
            room.asleep_until = until
            if until <= self._horizon:
                self._push(until, ROOM_WAKE, room)
        elif answer == _STUCK:
            room.stuck = True
        elif answer != _BLOCKED:
            self._kick(room)

    def _ask(self, host: SimHost) -> tuple[int, int]:
        """Record the check-in and, for a host with no assignment, ask `decide`.
        Returns what the answer means for waking (and the wake time, µs)."""
        now = self.now
        host.last_seen = host.anchor = now
        host.stamp += 1
        host.next_check_in = -1
        if host.silent:
            self._unsilence(host)
        if host.park_key >= 0:
            host.room.remove(host.park_key)
            host.park_key = -1
        if host.ctl is not None or host.busy or isinstance(host.reason, SkipReason):
            return _DONE, 0
        if self.counts.state is not CampaignState.RUNNING:
            return _BLOCKED, 0  # the controller considers running campaigns only
        snapshot = self.counts.snapshot()
        decision = decide(self.spec, host.facts, snapshot, self.to_datetime(now), self._windows)
        self.decisions += 1
        if isinstance(decision, Assign):
            self._assign(host, decision)
            return _DONE, 0
        host.reason = decision.reason
        return self._meaning(decision)

    def _meaning(self, decision: Wait | Skip) -> tuple[int, int]:
        if isinstance(decision, Skip) or decision.reason is WaitReason.TIMEZONE_UNKNOWN:
            return _STUCK, 0  # for good: nothing in a rehearsal changes a host's zone
        if decision.until is None:
            return _BLOCKED, 0
        until = self.time.at(decision.until)
        if until <= self.now:
            self.rec.anomalies += 1  # a lower bound in the past: ask again soon
            until = self.now + 1
        return _SLEEP, until

    def _park(self, host: SimHost) -> None:
        host.park_key = host.room.add(host.index, host.anchor)

    def _sleep_until(self, host: SimHost, until: int) -> None:
        t = self.time.check_in_at_or_after(host.anchor, until)
        t += self.time.latency(t)
        if t <= self._horizon:
            host.next_check_in = self._push(t, CHECK_IN, host)

    def _on_room_wake(self, payload: object) -> None:
        room = cast(WaitingRoom, payload)
        if room.asleep_until == self.now:
            room.asleep_until = -1
            self._kick(room, inclusive=True)

    def _kick(self, room: WaitingRoom, inclusive: bool = False) -> None:
        """Wake the waiting host of ``room`` that checks in first (strictly
        after now, or at or after now when ``inclusive``), unless the room is
        asleep until a known time, stuck, or already has a probe out."""
        now = self.now - 1 if inclusive else self.now
        while not room.chain and not room.stuck and room.asleep_until < 0 and len(room):
            host = self.hosts[room.pop_next(now)]
            host.park_key = -1
            if not host.reachable:
                continue  # it asks again when it reconnects
            t = self.time.check_in_after(host.anchor, now)
            t += self.time.latency(t)
            if t > self._horizon:
                self._park(host)
                return
            host.next_check_in = self._push(t, CHECK_IN, host)
            room.probe = host.index
            room.chain = True

    def _kick_after(self, ring: int) -> None:
        """The counts of ``ring`` changed: wake its rooms, and the later rings'
        when the ring's done-ness flipped (their gates read it)."""
        done = self.counts.snapshot().ring(ring).done
        rooms = self._by_ring.get(ring, [])
        if done != self._ring_done.get(ring, False):
            self._ring_done[ring] = done
            rooms = self._later.get(ring, rooms)
        for room in rooms:
            self._kick(room)

    # -- assignment and the agent -----------------------------------------------

    def _assign(self, host: SimHost, decision: Assign) -> None:
        now = self.now
        host.ctl = AssignmentStatus.IN_FLIGHT
        self.counts.add(host.cell, IN_FLIGHT, 1)
        self.in_flight += 1
        self.rec.assigned += 1
        host.reason = None
        host.assigned_at = host.last_report_at = now
        closes = decision.window_closes_at
        host.window_closes = None if closes is None else self.time.at(closes)
        host.order = Order(host.window_closes)
        host.busy = True
        self._push(now + self._silent_after + 1, SILENCE, (host, host.stamp))
        self._push(self.time.tick_after(now + self._report_timeout), TIMEOUT, host)
        self._enter(host, State.RECEIVED)

    def _enter(self, host: SimHost, state: State) -> None:
        now = self.now
        host.agent_state = state
        if state is State.VERIFY and host.fate.goes_dark:
            host.down += 1  # the patch took the host off the network, for good
            self.rec.gone_dark += 1
            return
        self._report(host, state, now)
        if state in TERMINAL:
            host.busy = False
            host.agent_final = state
            host.final_at = now
            if host.reachable:
                self._send_check_in(host)  # the agent checks in again at once
            return
        event, took = self._agent.step(state, host.fate, host.order, now)
        host.event = event
        if event is Event.ABORT and state is State.APPLY:
            self.rec.window_aborts += 1
        if took:
            self._push(now + took, STEP, host)
        else:
            self._step(host)  # no time passes: the next state is entered at once

    def _step(self, host: SimHost) -> None:
        try:
            state = next_state(host.agent_state, host.event)
        except KeyError:
            raise ModelGap(
                f"the agent's transitions have no ({host.agent_state}, {host.event}) any more "
                "(simulator/agentmodel.py must follow agent/orders/states.py)"
            ) from None
        self._enter(host, state)

    def _send_check_in(self, host: SimHost) -> None:
        delay = self.time.latency(self.now)
        if delay:
            host.next_check_in = self._push(self.now + delay, CHECK_IN, host)
        else:
            self._check_in(host)

    def _report(self, host: SimHost, state: State, at: int) -> None:
        if not host.reachable:
            host.queue.append((state, at))
            return
        delay = self.time.latency(at)
        if delay:
            self._push(at + delay, REPORT, (host, state, at))
        else:
            self._deliver(host, state, at)

    # -- the controller's side of results ---------------------------------------

    def _deliver(self, host: SimHost, state: State, at: int) -> None:
        """A report lands (`CampaignStore.apply_results`, then `_evaluate`)."""
        if host.ctl is not AssignmentStatus.IN_FLIGHT:
            if state in TERMINAL:
                host.late = True
            return
        host.last_report_at = at
        if state in TERMINAL:
            self._finish(host, OUTCOME_STATUS[state.value], at)
        if self.counts.version != self._evaluated:
            self._evaluate()

    def _finish(self, host: SimHost, status: AssignmentStatus, at: int) -> None:
        self.counts.move(host.cell, IN_FLIGHT, COUNTED[status])
        self.counts.finished(host.ring, self.to_datetime(at))
        self.in_flight -= 1
        self.rec.finished += 1
        host.ctl = status
        host.finished_at = at
        if status in PATCHED:
            self.rec.covered(host.cell, self.now)
        self._kick_after(host.ring)

    def _on_timeout(self, host: SimHost) -> None:
        if host.ctl is not AssignmentStatus.IN_FLIGHT:
            return
        if self._ctl_down:
            self._push(self.time.up_again(self.now), TIMEOUT, host)
            return
        last = self.to_datetime(host.last_report_at)
        if order_timed_out(self.spec, last, self._watching_since, self.to_datetime(self.now)):
            self._finish(host, AssignmentStatus.TIMED_OUT, self.now)
            self._push(self.now, EVALUATE, None)  # this tick's evaluation
        else:
            due = self.time.at(report_due_by(self.spec, last, self._watching_since))
            self._push(self.time.tick_after(due), TIMEOUT, host)

    def _evaluate(self) -> None:
        """`CampaignEngine._evaluate`: act on `lifecycle.verdict`."""
        self._evaluated = self.counts.version
        if self.counts.state is not CampaignState.RUNNING:
            return
        outcome = verdict(self.spec, self.counts.snapshot(), self.to_datetime(self.now))
        if isinstance(outcome, Halt):
            self._halt(outcome.reason)
        elif outcome is not None:
            self.counts.set_state(CampaignState.COMPLETED)
            self.rec.completed_at = self.now
        self._evaluated = self.counts.version

    def _halt(self, halt: HaltReason) -> None:
        self.counts.set_state(CampaignState.HALTED)
        self.rec.halts.append((self.now, halt))
        if self._resumes_left and self.settings.operator.resume_after is not None:
            self._resumes_left -= 1
            self._resume_due = True
            self._push(self.now + micros(self.settings.operator.resume_after), RESUME, None)

    def _on_resume(self, payload: object) -> None:
        """`CampaignEngine.resume`: accept the failures and silent hosts that
        halted it; the limits apply to what comes on top."""
        self._resume_due = False
        accepted = accepted_on_resume(self.spec, self.counts.snapshot())
        self.counts.accepted_failures = dict(accepted.failures)
        self.counts.accepted_silent = dict(accepted.silent)
        self.counts.forget_readings()  # as the engine does: asked afresh
        self.counts.set_state(CampaignState.RUNNING)
        if self.spec.rollout.analysis:
            self._read_analyses()
        self.rec.resumes.append(self.now)
        for room in self._rooms.values():
            self._kick(room)

    # -- silence, outages, the controller ---------------------------------------

    def _turns_silent_at(self, host: SimHost) -> int | None:
        """When ``host`` turns silent unless it checks in (`lifecycle.silent_after`)."""
        seen = None if host.last_seen is None else self.to_datetime(host.last_seen)
        after = silent_after(self.spec, seen, self._watching_since)
        return None if after is None else self.time.at(after)

    def _silence_from(self, host: SimHost, last_seen: int | None) -> None:
        """The host stopped checking in after ``last_seen``: silent once
        ``silent_after`` has passed (now, if it already has)."""
        host.last_seen = last_seen
        after = self._turns_silent_at(host)
        if after is None or after < self.now:
            self._on_silence((host, host.stamp))
        else:
            self._push(after + 1, SILENCE, (host, host.stamp))

    def _on_silence(self, payload: tuple[SimHost, int]) -> None:
        host, stamp = payload
        if host.stamp != stamp or host.silent:
            return
        if self._ctl_down:  # nobody counts while the controller is down
            self._push(self.time.up_again(self.now), SILENCE, payload)
            return
        after = self._turns_silent_at(host)
        if after is not None and self.now <= after:
            self._push(after + 1, SILENCE, payload)
            return
        host.silent = True
        assigned = host.ctl is not None
        self.counts.add(host.cell, SILENT if assigned else UNREACHABLE, 1)
        self.rec.silence(1, self.now)
        if not assigned:
            self._kick_after(host.ring)
        self._push(self.time.tick_at_or_after(self.now), EVALUATE, None)

    def _unsilence(self, host: SimHost) -> None:
        host.silent = False
        assigned = host.ctl is not None
        self.counts.add(host.cell, SILENT if assigned else UNREACHABLE, -1)
        self.rec.silence(-1, self.now)
        if not assigned:
            self._kick_after(host.ring)

    def _lose(self, host: SimHost) -> None:
        """An outage begins for the host: it stops checking in."""
        if host.down == 0 and not host.busy:
            last = host.anchor + (self.now - host.anchor) // self._interval * self._interval
            host.last_seen = last
            self._silence_from(host, last)
        host.down += 1

    def _regain(self, host: SimHost) -> None:
        host.down -= 1
        if host.down == 0:
            self._push(self.now + host.reconnect, RECONNECT, host)

    def _on_reconnect(self, payload: object) -> None:
        """Back after an outage: queued reports go out, then (if idle) a check-in."""
        host = cast(SimHost, payload)
        if not host.reachable:
            return
        queued, host.queue = host.queue, []
        for state, at in queued:
            self._report(host, state, at)
        if not host.busy:
            self._send_check_in(host)

    def _on_controller(self, payload: object) -> None:
        down = bool(payload)
        self.rec.controller.append((self.now, down))
        if down:
            self._ctl_down = True
            for host in self.hosts:
                self._lose(host)
        else:
            # A restarted controller counts silence and report time-outs from
            # now at the earliest (`lifecycle`): nobody could reach it.
            self._ctl_down = False
            self._watching_since = self.to_datetime(self.now)
            for host in self.hosts:
                if host.silent:
                    self._unsilence(host)
                    host.stamp += 1  # its old silence timer is void
                    self._silence_from(host, host.last_seen)
                self._regain(host)
            self._push(self.now, EVALUATE, None)  # the first tick after a start


def _value_at(series: Series, offset: timedelta) -> float:
    """The step series' value at ``offset`` (its first before it starts)."""
    value = series[0][1]
    for at, point in series:
        if at > offset:
            break
        value = point
    return value


def _holding(analysis: Analysis) -> float:
    """A value within the threshold, for an analysis the scenario gives no series."""
    return analysis.max if analysis.max is not None else float(analysis.min or 0.0)
