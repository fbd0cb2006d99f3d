"""What one peer, and all peers together, may ask of the controller.

Every bound here is documented in README.md ("Limits"): a host that sends
more gets a clear refusal, and no host can take the controller from the
others.

- Sizes: a request is at most MAX_MESSAGE_BYTES on the wire (gRPC refuses
  larger ones before reading them), an inventory at most
  MAX_INVENTORY_ENTRIES packages, and every string a host sends is bounded
  (`check_strings`).
- Characters: no text a peer sends may hold a NUL (`scrub_nul`): neither
  store would keep it alike (PostgreSQL refuses it in text, and its JSON
  type any document that escapes it, so one host's hostname could break
  every enrollment's query). Free text for a person shows it as U+FFFD.
- One call of each kind per host at a time (`Admission`): a second,
  parallel one is answered RESOURCE_EXHAUSTED before its body is even
  decoded, so six parallel 30 MB check-ins cost what one does.
- All hosts together: at most `max_in_flight` heavy calls at once; beyond
  it the controller sheds load (RESOURCE_EXHAUSTED with a retry delay in the
  `fleetpatch-retry-after-ms` trailer, `fleetpatch.overload`) rather than
  queueing without end. The delay is a slot (`Capacity`): the shed callers
  are told to come back one after another at the rate the controller has
  been seen to serve when busy, so a burst (a herd after an outage, or the
  hosts an emergency campaign nudged) is served at full speed and in about
  the time it takes, rather than all at once again or all long after.
  The rate is in light calls (`call_units`), so that one measured while
  the fleet sent its inventories does not slow what comes after.
"""

from __future__ import annotations

import ctypes
import random
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

from fleetpatch.logline import quoted
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from controller.errors import Overloaded, UsageError

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# The largest answer the controller builds for an admin: a host with its
# inventory and its available updates, each from a check-in of up to
# MAX_MESSAGE_BYTES, or a page of hosts with their health checks. The admin
# CLI takes answers this large (gRPC's default, 4 MiB, refused a host's
# large inventory that the controller had taken).
MAX_ANSWER_BYTES = 4 * MAX_MESSAGE_BYTES
# No id the controller makes (host, token, campaign, order), nor an admin's
# name or a vulnerability's id, is longer; a request naming a longer one
# names nothing, and its words are not worth quoting whole.
MAX_ID = 128
# A peer's id quoted in an answer (`quoted_id`), and the whole message of a
# refusal (`status_text`), which gRPC sends in a header (a 20 KB one, over
# its 16 KiB limit, reached the CLI as "Stream removed": retry later).
QUOTED_ID = 100
MAX_STATUS_TEXT = 1000
# A large Debian or RHEL host has 3,000-6,000 packages; ten times the
# largest we have seen still fits comfortably under MAX_MESSAGE_BYTES.
MAX_INVENTORY_ENTRIES = 50_000
MAX_PACKAGE_FIELD = 200  # a package name, version or architecture
MAX_TEXT = 1024  # any other string a host reports (hostname, kernel, check names)
MAX_DETAIL = 4096  # the free text of a health check result
# Progress reports: per call; ids and step names longer than MAX_REPORT_ID
# are refused, a report's detail is cut at MAX_REPORT_DETAIL (and so is
# any agent-supplied text that goes into the audit trail).
MAX_REPORTS_PER_CALL = 500
MAX_REPORT_ID = 128
MAX_REPORT_DETAIL = 2000
# A campaign file (`campaign create`, CreateCampaign): its text is stored
# and sent back whole in every answer about the campaign (`campaign show`,
# `campaign list`), so it is bounded in bytes (UTF-8, comments included)
# far below what an admin client takes (MAX_ANSWER_BYTES; an older one,
# gRPC's default 4 MiB); a plan naming 40,000 hosts (`campaign plan`, 26
# bytes a host) fits. Its free text (the description, an analysis's
# PromQL query) is bounded apart, as MAX_CAMPAIGN_TEXT characters.
MAX_CAMPAIGN_BYTES = 1024 * 1024
MAX_CAMPAIGN_TEXT = 4096
# Heavy calls (check-ins, reports, enrollments) being served at once, over
# all hosts; a full fleet's check-ins are spread over the interval, so this
# is only reached by a herd (a controller that comes back after an outage).
DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_MAX_DOWNLOADS = 64
DOWNLOADS = frozenset({"FetchArtifact"})
RETRY_AFTER_SECONDS = 5.0
# Heavy calls a second the controller is assumed to finish when busy, until
# it has been seen busy (then measured, `Capacity`); the shed callers' slots
# are at most MAX_SLOT_SECONDS away (past that, they are shed again then).
DEFAULT_CAPACITY = 2000.0
MIN_CAPACITY = 50.0
# What a call costs the controller, in light calls (a check-in that carries
# no inventory: what a steady fleet and nudged hosts send): one, plus one
# for each BYTES_PER_UNIT of request. Measured with `fleetpatch-sim load`,
# --change-rate 0 against 1: a check-in carrying a 300-package inventory
# (7 KiB) costs 3.3-3.6 times the CPU of one without (122 bytes).
BYTES_PER_UNIT = 3 * 1024
# A check-in whose answer carries a work order costs this many light calls
# more (`charge`): the order decided, signed, recorded with its host's next
# sequence and audited, which the request's size does not show. Measured
# here, a nudged check-in (a lone host given a new order) costs about what
# two or three light calls served back to back do. Without it, the rate
# measured while an emergency's hosts checked in was a third of the one
# measured on light calls, and the next push started at a third of the pace.
ORDER_UNITS = 2.0
MAX_SLOT_SECONDS = 120.0
# Calls that gRPC core has received but the server has not yet taken up
# (its event loop busy with others): past the first, core cancels new ones
# at random, past the second all of them, and the agent sees CANCELLED
# without the controller having seen the call. gRPC's defaults (1,000 and
# 3,000) cut a herd of a few thousand hosts before `Admission` could shed
# it with a retry delay; these leave the shedding to `Admission` up to a
# herd of this size, and still bound what waits unseen.
MAX_PENDING_CALLS = 10_000
MAX_PENDING_CALLS_HARD = 20_000
PENDING_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS_HARD),
)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _malloc_trim()
# Inventories at least this large are followed by `release_memory`.
LARGE_INVENTORY = 10_000


def release_memory() -> None:
    """Give freed heap back to the system (glibc keeps it otherwise): after
    a large inventory the controller returns to its idle size rather than
    keeping its peak for good. A few milliseconds; a no-op off glibc."""
    if _TRIM is not None:
        _TRIM(0)


def check_strings(message: Message, what: str, limit: int = MAX_TEXT) -> None:
    """Raise UsageError naming the first string field of ``message`` (and of
    the messages in it) longer than ``limit``; fields named ``detail`` may
    hold MAX_DETAIL.

    A message no larger on the wire than ``limit`` bytes holds no longer
    string (a character takes a byte at least), so it is passed without a
    look at its fields: the facts of a check-in, and each package of an
    inventory, are passed so (an inventory of 300 packages took a
    millisecond field by field)."""
    if message.ByteSize() <= limit:
        return
    for fd, value in message.ListFields():
        path = f"{what}.{fd.name}"
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                for key, item in value.items():
                    _check_text(f"{path} key", key, limit)
                    if isinstance(item, str):
                        _check_text(f"{path}[{key[:40]}]", item, limit)
            elif fd.is_repeated:
                for item in value:
                    if item.ByteSize() > limit:
                        check_strings(item, path, limit)
            else:
                check_strings(value, path, limit)
        elif fd.type == FieldDescriptor.TYPE_STRING:
            bound = MAX_DETAIL if fd.name == "detail" else limit
            items = value if fd.is_repeated else (value,)
            for item in items:
                _check_text(path, item, bound)


# Free text for a person (a check's output, why a step or a renewal failed,
# an advisory's summary): a command's output may hold a NUL, shown as
# U+FFFD rather than refused. Any other string holding one is refused.
FREE_TEXT = frozenset({"detail", "renewal_error", "summary"})
_NUL = "\x00"


def scrub_nul(message: Message, what: str) -> None:
    """Replace the NUL characters of ``message``'s free text (FREE_TEXT
    fields, at any depth) with U+FFFD; raise UsageError naming the first
    other string (a field, a map key or value) that holds one. Called only
    for a request whose bytes hold a zero byte, as rare as it is cheap to
    look for."""
    for fd, value in message.ListFields():
        path = f"{what}.{fd.name}"
        if fd.type == FieldDescriptor.TYPE_STRING:
            _scrub_strings(message, fd, path)
        elif fd.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        elif fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            _scrub_map(value, path)
        elif fd.is_repeated:
            for item in value:
                scrub_nul(item, path)
        else:
            scrub_nul(value, path)


def _scrub_strings(message: Message, fd: FieldDescriptor, path: str) -> None:
    value = getattr(message, fd.name)
    for index, item in enumerate(value if fd.is_repeated else [value]):
        if _NUL not in item:
            continue
        if fd.name not in FREE_TEXT:
            raise _holds_nul(path)
        if fd.is_repeated:
            value[index] = item.replace(_NUL, "\ufffd")
        else:
            setattr(message, fd.name, item.replace(_NUL, "\ufffd"))


def _scrub_map(entries: Any, path: str) -> None:
    for key in list(entries):
        if _NUL in key:
            raise _holds_nul(f"{path} key")
        item = entries[key]
        if isinstance(item, Message):
            scrub_nul(item, f"{path}[{key[:40]}]")
        elif isinstance(item, str) and _NUL in item:
            raise _holds_nul(f"{path}[{key[:40]}]")


def _holds_nul(path: str) -> UsageError:
    return UsageError(f"{path} holds a NUL character (U+0000), which no text here may")


def _check_text(path: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise UsageError(f"{path} is {len(value)} characters long; at most {limit} are taken")


def quoted_id(value: str) -> str:
    """A peer's ``value`` (an id, a name) as a message quotes it: one line,
    at most QUOTED_ID characters, in quotes."""
    return repr(quoted(value, QUOTED_ID))


def status_text(message: str) -> str:
    """``message`` as a refusal's status and its log line carry it: one
    line, at most MAX_STATUS_TEXT characters (a quarter of that when any is
    not ASCII: gRPC sends each byte of those as three), so that no peer's
    words quoted in it can make it too long for gRPC to deliver."""
    return quoted(message, MAX_STATUS_TEXT if message.isascii() else MAX_STATUS_TEXT // 4)


def call_units(request_bytes: int) -> float:
    """What a call with a request of ``request_bytes`` costs, in light calls."""
    return 1.0 + request_bytes / BYTES_PER_UNIT


class Served:
    """A call being served: `Admission.admit`'s block, entered when the call
    is admitted (or refused: Overloaded), left when it ends. ``units``: what
    it cost, in light calls, once its request is read (`call_units`).

    A class rather than a generator-based context manager: every call
    enters one, and this takes half the time (README, "Performance")."""

    __slots__ = ("_admission", "_download", "_kind", "_peer", "_token", "units")
    _token: Token[Served | None]  # set on entering: `charge` finds the call by it

    def __init__(self, admission: Admission, peer: str | None, kind: str) -> None:
        self.units = 1.0
        self._admission = admission
        self._peer = peer
        self._kind = kind
        self._download = kind in DOWNLOADS

    def __enter__(self) -> Served:
        self._admission._take(self._peer, self._kind, self._download)
        self._token = _SERVED.set(self)
        return self

    def __exit__(self, *_: object) -> None:
        _SERVED.reset(self._token)
        self._admission._give_back(self._peer, self._kind, self._download, self.units)


# The call being served on this task (`Served`'s block), for `charge`.
_SERVED: ContextVar[Served | None] = ContextVar("fleetpatch_served", default=None)


def charge(units: float) -> None:
    """Count the call being served on this task for ``units`` light calls
    more than its request's size says (a check-in answered with a work
    order: ORDER_UNITS); nothing outside a `Served` block."""
    served = _SERVED.get()
    if served is not None:
        served.units += units


@dataclass
class Capacity:
    """How many light calls (`call_units`) a second this controller serves
    while busy, and when to ask a shed caller to come back.

    The rate is measured only between calls that finish while the
    controller is busy (half its room or more in use), over a second of
    such time at least, and kept as a moving average: an idle hour does not
    make it look slow. Each call counts for what it cost: a herd of hosts
    sending their whole inventories is served at a third of the calls a
    second of one sending hashes only, and the rate measured then is not
    the one the nudged hosts of an emergency later get.

    `slot` hands out return times one after another at that rate, after
    the calls in flight now: N callers shed at once come back over
    N / rate seconds, as soon as they can be served."""

    per_second: float = DEFAULT_CAPACITY
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._last_busy: float | None = None
        self._busy_time = 0.0
        self._busy_done = 0.0
        self._next_slot = 0.0

    def finished(self, busy: bool, units: float = 1.0) -> None:
        """A call that cost ``units`` finished; ``busy``: with half the room
        or more in use."""
        now = self.clock()
        if busy and self._last_busy is not None:
            self._busy_time += now - self._last_busy
            self._busy_done += units
            if self._busy_time >= 1.0:
                measured = self._busy_done / self._busy_time
                self.per_second = max(MIN_CAPACITY, 0.5 * self.per_second + 0.5 * measured)
                self._busy_time, self._busy_done = 0.0, 0.0
        self._last_busy = now if busy else None

    def slot(self, in_flight: int) -> float:
        """Seconds until a caller shed now should come back."""
        now = self.clock()
        at = max(self._next_slot, now + in_flight / self.per_second)
        self._next_slot = at + 1 / self.per_second
        return min(max(at - now, 0.1), MAX_SLOT_SECONDS)


@dataclass
class Admission:
    """Who may be served now: one call per (host, kind) at a time; at most
    ``max_in_flight`` heavy calls over all hosts, and apart from them at
    most ``max_downloads`` artifact downloads (minutes long each, so they
    must not take the room check-ins need)."""

    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    max_downloads: int = DEFAULT_MAX_DOWNLOADS
    retry_after: float = RETRY_AFTER_SECONDS
    rng: random.Random = field(default_factory=random.Random)
    capacity: Capacity = field(default_factory=Capacity)

    def __post_init__(self) -> None:
        self._busy: set[tuple[str, str]] = set()
        self._in: dict[bool, int] = {False: 0, True: 0}  # by "is a download"
        self.shed = 0  # calls refused for overall load, for metrics and tests

    @property
    def in_flight(self) -> int:
        return sum(self._in.values())

    def admit(self, peer: str | None, kind: str) -> Served:
        """Serve one ``kind`` call of ``peer`` in the ``with`` block (its
        `Served` says what the call cost, once known); entering raises
        Overloaded when that peer already has one in flight or the
        controller is full. ``peer`` None: only the overall bound applies
        (enrollments: many hosts may share an address behind NAT)."""
        return Served(self, peer, kind)

    def _take(self, peer: str | None, kind: str, download: bool) -> None:
        if peer is not None and (peer, kind) in self._busy:
            raise Overloaded(
                f"{peer} already has a {kind} call in flight; one at a time",
                self.retry_after,
            )
        if self._in[download] >= (self.max_downloads if download else self.max_in_flight):
            self.shed += 1
            if download:  # minutes long each: no rate to slot them by
                delay = self.retry_after * self.rng.uniform(1.0, 3.0)
            else:  # a slot of its own, after those shed before it
                delay = self.capacity.slot(self._in[False]) * self.rng.uniform(1.0, 1.1)
            raise Overloaded("the controller is busy; retry later", delay)
        if peer is not None:
            self._busy.add((peer, kind))
        self._in[download] += 1

    def _give_back(self, peer: str | None, kind: str, download: bool, units: float) -> None:
        if peer is not None:
            self._busy.discard((peer, kind))
        if not download:
            busy = self._in[False] * 2 >= self.max_in_flight
            self.capacity.finished(busy, units)
        self._in[download] -= 1


@dataclass
class RefusalLimit:
    """Refused attempts (enrollments with a bad token, say) per peer
    address: at most ``limit`` in ``window`` seconds are answered and
    audited; past that the peer is turned away unheard (RESOURCE_EXHAUSTED)
    until the window has room, and the turned-away attempts are counted
    into the next audited refusal. Memory is bounded by ``max_peers``."""

    limit: int = 10
    window: float = 60.0
    max_peers: int = 10_000

    def __post_init__(self) -> None:
        self._refused: dict[str, deque[float]] = {}
        self._turned_away: dict[str, int] = {}

    def check(self, peer: str, now: float) -> None:
        """Raise Overloaded when ``peer`` has used up its refusals."""
        recent = self._recent(peer, now)
        if recent is not None and len(recent) >= self.limit:
            self._turned_away[peer] = self._turned_away.get(peer, 0) + 1
            raise Overloaded(
                f"too many refused attempts from {peer}; try again later",
                recent[0] + self.window - now,
            )

    def refused(self, peer: str, now: float) -> int:
        """Count a refusal of ``peer``; how many of its attempts were turned
        away unheard since the last one counted."""
        recent = self._recent(peer, now)
        if recent is None:
            if len(self._refused) >= self.max_peers:
                self._forget(now)
            recent = self._refused[peer] = deque()
        recent.append(now)
        return self._turned_away.pop(peer, 0)

    def _recent(self, peer: str, now: float) -> deque[float] | None:
        recent = self._refused.get(peer)
        while recent and recent[0] <= now - self.window:
            recent.popleft()
        return recent

    def _forget(self, now: float) -> None:
        """Drop peers with nothing in the window; then the oldest ones."""
        for peer in [p for p, r in self._refused.items() if not r or r[-1] <= now - self.window]:
            del self._refused[peer]
        while len(self._refused) >= self.max_peers:
            del self._refused[next(iter(self._refused))]


def peer_address(peer: str) -> str:
    """The address part of a gRPC peer ("ipv4:10.0.0.5:51234" -> "10.0.0.5")."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    address = rest.rsplit(":", 1)[0]
    return address.removeprefix("[").removesuffix("]")
