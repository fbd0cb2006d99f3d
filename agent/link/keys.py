"""Learning a rotated work-order signing key.

The controller announces each new key endorsed by the key before it. The
agent adds a key only when its endorsement checks out against a key it
already trusts (walking the chain in order), so a controller that lost its
key cannot talk an agent into trusting an attacker's, and the agent never
needs re-enrolling when the key rotates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fleetpatch.envelope import EnvelopeError, accept_endorsed
from fleetpatch.v1 import types_pb2

from agent.statedir import StateDir

log = logging.getLogger(__name__)


def learn(state: StateDir, announced: Sequence[types_pb2.SigningKey]) -> list[str]:
    """Pin the announced keys whose endorsement verifies; returns their ids."""
    trusted = state.trusted_signing_keys()
    learned = []
    for key in announced:
        if key.key_id in trusted:
            continue
        try:
            trusted[key.key_id] = accept_endorsed(key, trusted)
        except EnvelopeError as exc:
            log.warning("ignoring an announced signing key: %s", exc)
            continue
        learned.append(key.key_id)
        log.info("learned work-order signing key %s (endorsed by %s)", key.key_id,
                 key.endorsed_by_key_id)  # fmt: skip
    if learned:
        state.write_trusted_signing_keys(trusted)
    return learned
