"""One simulated host: what the controller knows of it and where its agent is.

Plain mutable records with ``__slots__`` (100,000 of them are walked in a
hot loop); the engine is the only writer. Times are integer microseconds
since the simulation's start, so that instants the scheduler returns
(``Wait.until``) come back exactly.
"""

from __future__ import annotations

from agent.orders.states import Event, State
from controller.campaigns import HostFacts, SkipReason, WaitReason
from controller.campaigns.counts import Cell
from controller.model import AssignmentStatus

from .agentmodel import Fate, Order
from .waiting import WaitingRoom


class SimHost:
    __slots__ = (
        "agent_final",
        "agent_state",
        "anchor",
        "assigned_at",
        "busy",
        "cell",
        "ctl",
        "down",
        "event",
        "facts",
        "fate",
        "final_at",
        "finished_at",
        "index",
        "last_report_at",
        "last_seen",
        "late",
        "next_check_in",
        "order",
        "park_key",
        "queue",
        "reason",
        "reconnect",
        "ring",
        "room",
        "silent",
        "stamp",
        "window_closes",
    )

    def __init__(
        self, index: int, facts: HostFacts, room: WaitingRoom, fate: Fate, reconnect: int
    ) -> None:
        self.index = index
        self.facts = facts
        self.ring = facts.ring
        self.cell: Cell = (facts.ring, facts.region)
        self.room = room
        self.fate = fate
        self.reconnect = reconnect  # µs after an outage ends until it checks in again
        # The controller's view.
        self.anchor = 0  # its check-ins fall on anchor + k * interval while idle
        self.last_seen: int | None = None
        self.stamp = 0  # bumped at every check-in: older silence timers are void
        self.silent = False  # counted as silent (assigned) or unreachable (not yet)
        self.ctl: AssignmentStatus | None = None  # its patch assignment's status
        self.assigned_at = 0
        self.last_report_at = 0
        self.finished_at = 0
        self.window_closes: int | None = None
        self.reason: WaitReason | SkipReason | None = None  # its last answer (Skip: for good)
        self.park_key = -1  # in its waiting room while >= 0
        self.next_check_in = -1  # sequence number of its one valid check-in event
        # The host's view.
        self.down = 0  # outages in force; reachable while 0
        self.busy = False  # running an order: it does not check in meanwhile
        self.agent_state = State.RECEIVED  # meaningful while busy or once finished
        self.event = Event.OK  # how the current step will end
        self.agent_final: State | None = None
        self.final_at = 0
        self.order = Order(None)  # what the agent keeps of its order while busy
        self.late = False  # its final report came after the controller timed it out
        self.queue: list[tuple[State, int]] = []  # reports not delivered yet

    @property
    def reachable(self) -> bool:
        return self.down == 0
