"""Deliver campaign events to webhooks: JSON POSTs signed with HMAC-SHA256,
at least once, in order, retried with exponential backoff.

Each webhook has a cursor in the store: the last audit sequence it has
been given. A pass reads the trail after the cursor, turns records into
events (`events`), POSTs them in order and moves the cursor once they are
accepted (any 2xx). A refused or failed POST stops that webhook's pass and
is tried again after 1, 2, 4 ... seconds, at most `MAX_DELAY`; the
others go on. Since the cursor moves only after delivery, a crash or
restart re-sends at most what was in flight: receivers dedupe on the
`X-Fleetpatch-Delivery` header (the event's key).

Headers: `X-Fleetpatch-Event` (the kind), `X-Fleetpatch-Delivery` (the
idempotency key), `X-Fleetpatch-Signature: sha256=<hex HMAC of the body
with the webhook's secret>`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.campaigns import parse_campaign
from controller.errors import NotFound
from controller.notify.events import Event, events_of
from controller.periodic import every
from controller.store import Store
from controller.store.thread import StoreThread

log = logging.getLogger(__name__)

PAGE = 500  # audit records read per pass
BASE_DELAY = 1.0  # seconds before the first retry
MAX_DELAY = 300.0
TIMEOUT = 10.0  # seconds for one POST


class DeliveryFailed(Exception):
    """A POST that was not accepted (no answer, or not 2xx)."""


@dataclass(frozen=True)
class Webhook:
    name: str
    url: str
    secret: bytes = field(repr=False)


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def post(hook: Webhook, event: Event) -> None:
    """POST one event; raises DeliveryFailed."""
    body = json.dumps(event.body(), sort_keys=True).encode()
    request = urllib.request.Request(  # noqa: S310 - the URL is checked to be http(s) in settings
        hook.url, data=body, method="POST",
        headers={
            "Content-Type": "application/json", "User-Agent": "fleetpatch-controller",
            "X-Fleetpatch-Event": event.kind, "X-Fleetpatch-Delivery": event.key,
            "X-Fleetpatch-Signature": signature(hook.secret, body),
        },
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:  # noqa: S310 - as above
            answer.read()
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryFailed(str(reason)) from None


@dataclass
class _Progress:
    cursor: int | None = None
    failures: int = 0
    retry_at: float = 0.0


class Deliveries:
    """The webhooks' delivery loop. ``send`` and ``clock`` are injectable
    (tests drive `pump` directly, without sleeping)."""

    def __init__(
        self,
        db: StoreThread,
        hooks: list[Webhook],
        send: Callable[[Webhook, Event], None] = post,
        clock: Callable[[], float] = time.monotonic,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        """``leading``: whether this controller is the replica that delivers
        (the one running the campaign tick, when replicas share a database)."""
        self._db = db
        self._leading = leading
        self._hooks = hooks
        self._send = send
        self._clock = clock
        self._progress = {hook.name: _Progress() for hook in hooks}
        self._rings: dict[str, list[int]] = {}  # campaign -> its rings in rollout order
        # (campaign, ring) -> its first patch order: once there, it never changes,
        # so a trail of 100,000 assignments asks the store once per ring.
        self._first: dict[tuple[str, int], str] = {}

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        if self._hooks:
            await every(interval, stop, self.pump, "webhook deliveries")

    async def pump(self) -> int:
        """One pass over every webhook due; how many events were delivered."""
        if not self._leading():
            # Another replica delivers and moves the cursors: read them
            # again when this one takes over.
            for progress in self._progress.values():
                progress.cursor = None
            return 0
        delivered = 0
        for hook in self._hooks:
            progress = self._progress[hook.name]
            if self._clock() >= progress.retry_at:
                delivered += await self._deliver(hook, progress)
        return delivered

    async def _deliver(self, hook: Webhook, progress: _Progress) -> int:
        """Deliver what the trail holds after the cursor, page by page, until
        it is all delivered or a POST fails."""
        delivered, more = 0, True
        while more:
            sent, more = await self._page(hook, progress)
            delivered += sent
        return delivered

    async def _page(self, hook: Webhook, progress: _Progress) -> tuple[int, bool]:
        """One page; how many events went out and whether to read on."""
        if progress.cursor is None:
            progress.cursor = await self._db.call(lambda s: s.webhook_cursor(hook.name))
        after = progress.cursor
        page = await self._db.call(lambda s: self._events(s, after))
        delivered, cursor, failed = 0, after, False
        try:
            for seq, events in page:
                for event in events:
                    await asyncio.to_thread(self._send, hook, event)
                    delivered += 1
                cursor = seq
        except DeliveryFailed as exc:
            failed = True
            progress.failures += 1
            delay = min(MAX_DELAY, BASE_DELAY * 2 ** (progress.failures - 1))
            progress.retry_at = self._clock() + delay
            log.warning("webhook %s: delivery failed (%s); attempt %d, next in %.0fs",
                        hook.name, exc, progress.failures, delay)  # fmt: skip
        else:
            progress.failures = 0
        if cursor != after:
            await self._db.call(lambda s: s.advance_webhook(hook.name, cursor))
            progress.cursor = cursor
        return delivered, not failed and len(page) == PAGE

    def _events(self, store: Store, after: int) -> list[tuple[int, list[Event]]]:
        """The next page of the trail as (sequence, its events); on the store thread."""

        def ring_before(campaign_id: str, ring: int) -> int | None:
            rings = self._rings.get(campaign_id)
            if rings is None:
                try:
                    record = store.get_campaign(campaign_id)
                except NotFound:
                    return None
                spec = parse_campaign(record.spec, campaign_id, bounded=False)
                rings = self._rings[campaign_id] = [stage.ring for stage in spec.rollout.rings]
            if ring not in rings or rings.index(ring) == 0:
                return None
            return rings[rings.index(ring) - 1]

        def first_order(campaign_id: str, ring: int) -> str | None:
            found = self._first.get((campaign_id, ring))
            if found is None:
                found = store.first_order_of_ring(campaign_id, ring)
                if found is not None:
                    self._first[(campaign_id, ring)] = found
            return found

        return [
            (record.seq, events_of(record, first_order, ring_before))
            for record in store.audit_after(after, PAGE)
        ]
