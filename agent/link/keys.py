"""Learning rotated work-order signing keys, and letting old ones go.

The controller announces each new key endorsed by the key before it. The
agent adds a key only when its endorsement checks out against a key it
still trusts (walking the chain in order), so a controller that lost its
key cannot talk an agent into trusting an attacker's, and the agent never
needs re-enrolling when the key rotates.

The controller also says which keys it no longer signs with. Withdrawals
only take trust away, so the authenticated channel suffices:

- a *retired* key (a plain rotation) is trusted until the instant the
  controller names (its successor's first use plus a grace period), and
  only once the agent holds the key the controller signs with now, so a
  host never ends up trusting no key;
- a *revoked* key (`rotate-key --revoke-old`: it leaked) is refused at
  once, and so is every key it endorsed but its named successor (learned
  from it before the revocation, in the same answer at the latest); a
  revoked key is never trusted again, whatever endorses it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from fleetpatch.v1 import agent_pb2, types_pb2

from agent.statedir import KeyStatus, StateDir

log = logging.getLogger(__name__)


def learn(
    state: StateDir,
    announced: Sequence[types_pb2.SigningKey],
    withdrawn: Sequence[types_pb2.WithdrawnKey] = (),
    current_key_id: str = "",
    now: datetime | None = None,
) -> list[str]:
    """Pin the announced keys whose endorsement verifies against a key
    still trusted, then apply the withdrawals; returns the ids learned."""
    from fleetpatch.envelope import EnvelopeError, accept_endorsed  # cryptography: when needed

    now = now or datetime.now(UTC)
    trusted, status = state.trusted_signing_keys(), state.key_status()
    gone = status.withdrawn(now)
    usable = {k: v for k, v in trusted.items() if k not in gone}
    learned = []
    for key in announced:
        if key.key_id in trusted:
            continue
        if key.key_id in status.revoked:
            log.warning("ignoring announced signing key %s: it was revoked", key.key_id)
            continue
        try:
            usable[key.key_id] = trusted[key.key_id] = accept_endorsed(key, usable)
        except EnvelopeError as exc:
            log.warning("ignoring an announced signing key: %s", exc)
            continue
        status.endorsed_by[key.key_id] = key.endorsed_by_key_id
        learned.append(key.key_id)
        log.info("learned work-order signing key %s (endorsed by %s)", key.key_id,
                 key.endorsed_by_key_id)  # fmt: skip
    changed = bool(learned)
    for w in withdrawn:
        if w.key_id == current_key_id:
            log.warning("ignoring a withdrawal of %s, the key orders are signed with", w.key_id)
        elif w.revoked:
            changed |= _revoke(status, w.key_id, w.successor_key_id, now)
        elif w.HasField("retire_at") and current_key_id in usable:
            try:
                at = w.retire_at.ToDatetime(tzinfo=UTC)
            except (ValueError, OverflowError):  # outside 0001-9999: no time at all
                log.warning("ignoring a withdrawal of %s: its retire_at (%ds) is not a valid "
                            "time", w.key_id, w.retire_at.seconds)  # fmt: skip
                continue
            if at < status.retire_at.get(w.key_id, datetime.max.replace(tzinfo=UTC)):
                status.retire_at[w.key_id] = at
                changed = True
                log.info("work-order signing key %s is trusted until %s (retired)", w.key_id,
                         f"{at:%Y-%m-%d %H:%M:%SZ}")  # fmt: skip
    if learned:
        state.write_trusted_signing_keys(trusted)
    if changed:
        state.write_key_status(status)
    return learned


def learn_announced(state: StateDir, answer: agent_pb2.CheckInResponse) -> list[str]:
    """`learn` what a check-in's answer announces."""
    return learn(state, answer.signing_keys, answer.withdrawn_keys, answer.current_key_id)


def _revoke(status: KeyStatus, key_id: str, successor: str, now: datetime) -> bool:
    """Revoke ``key_id`` and, but for ``successor``, every key it endorsed
    (and so on down); True when anything changed."""
    changed = False
    todo = [(key_id, successor)]
    while todo:
        revoked, keep = todo.pop()
        if revoked not in status.revoked:
            status.revoked[revoked] = now
            changed = True
            log.warning("work-order signing key %s is revoked: orders signed with it are "
                        "refused from now on", revoked)  # fmt: skip
        todo += [
            (k, "") for k, by in status.endorsed_by.items()
            if by == revoked and k != keep and k not in status.revoked
        ]  # fmt: skip
    return changed
