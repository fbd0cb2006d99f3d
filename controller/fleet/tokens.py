"""Enrollment tokens: made by an admin, spent by agents when they enroll.

A token reads ``fpt_<id>_<secret>``. The controller stores only the
SHA-256 of the secret; the id lets an admin list and revoke tokens without
ever seeing a secret again.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controller.errors import TokenRefused

_TOKEN = re.compile(r"^fpt_([0-9a-f]{12})_([A-Za-z0-9_-]{32})$")
MAX_TTL = timedelta(days=30)


@dataclass(frozen=True)
class Token:
    token_id: str
    secret_hash: str
    region: str
    ring: int
    uses_allowed: int
    created_at: datetime
    expires_at: datetime
    uses: int = 0
    revoked: bool = False
    labels: dict[str, str] = field(default_factory=dict)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(
    region: str,
    ring: int,
    uses: int,
    ttl: timedelta,
    labels: dict[str, str],
    now: datetime,
) -> tuple[Token, str]:
    """A new token and the string to hand to agents (shown once)."""
    if uses < 1:
        raise ValueError("a token must allow at least one use")
    if not timedelta(seconds=1) <= ttl <= MAX_TTL:
        raise ValueError("a token's ttl must be between 1s and 30d")
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    token = Token(token_id, _hash(secret), region, ring, uses, now, now + ttl, labels=labels)
    return token, f"fpt_{token_id}_{secret}"


def parse(text: str) -> tuple[str, str]:
    """Split a token string into id and secret; raises TokenRefused."""
    match = _TOKEN.fullmatch(text.strip())
    if not match:
        raise TokenRefused("the enrollment token is malformed")
    return match.group(1), match.group(2)


def id_of(text: str) -> str:
    """The id of a token string, for the record (never the secret); "-" for
    text that is not a token."""
    match = _TOKEN.fullmatch(text.strip()[:200])
    return match.group(1) if match else "-"


def check(token: Token | None, secret: str, now: datetime) -> Token:
    """Return the token when it may enroll one more host now.

    Raises TokenRefused saying why: unknown (or wrong secret: the two are
    not told apart, to give a guesser nothing), revoked, expired, used up.
    """
    if token is None or not hmac.compare_digest(token.secret_hash, _hash(secret)):
        raise TokenRefused("the enrollment token is unknown")
    if token.revoked:
        raise TokenRefused(f"enrollment token {token.token_id} has been revoked")
    if now >= token.expires_at:
        raise TokenRefused(
            f"enrollment token {token.token_id} expired at {token.expires_at:%Y-%m-%d %H:%M:%SZ}"
        )
    if token.uses >= token.uses_allowed:
        raise TokenRefused(
            f"enrollment token {token.token_id} is used up "
            f"({token.uses} of {token.uses_allowed} uses)"
        )
    return token
