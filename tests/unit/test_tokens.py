"""controller.tokens: enrollment tokens, made by admins and spent by agents."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from controller.errors import Refused, TokenRefused
from controller.fleet.tokens import MAX_TTL, Token, check, new_token, parse

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _new(uses: int = 2, ttl: timedelta = timedelta(hours=1)) -> tuple[Token, str]:
    return new_token("eu-west", 1, uses, ttl, {"role": "web"}, NOW)


def test_new_token_fields():
    token, _ = _new(uses=3, ttl=timedelta(hours=2))
    assert (token.region, token.ring, token.uses_allowed) == ("eu-west", 1, 3)
    assert token.labels == {"role": "web"}
    assert token.created_at == NOW
    assert token.expires_at == NOW + timedelta(hours=2)
    assert token.uses == 0
    assert not token.revoked


def test_token_text_round_trips_through_parse():
    token, text = _new()
    token_id, secret = parse(text)
    assert token_id == token.token_id
    assert text == f"fpt_{token_id}_{secret}"
    assert check(token, secret, NOW) is token


def test_only_the_hash_of_the_secret_is_kept():
    token, text = _new()
    _, secret = parse(text)
    assert secret not in repr(token)
    assert token.secret_hash == hashlib.sha256(secret.encode()).hexdigest()


def test_tokens_are_unique():
    made = [_new() for _ in range(50)]
    assert len({t.token_id for t, _ in made}) == 50
    assert len({text for _, text in made}) == 50


def test_parse_tolerates_surrounding_whitespace():
    token, text = _new()
    assert parse(f"  {text}\n")[0] == token.token_id


@pytest.mark.parametrize(
    "text",
    [
        "",
        "fpt_",
        "fpt_0123456789ab",
        "fpt_0123456789ab_" + "s" * 31,  # secret too short
        "fpt_0123456789ab_" + "s" * 33,  # secret too long
        "fpt_0123456789AB_" + "s" * 32,  # id not lowercase hex
        "fpt_0123456789a_" + "s" * 32,  # id too short
        "xyz_0123456789ab_" + "s" * 32,
        "fpt_0123456789ab_" + "s" * 31 + "!",
        "fpt-0123456789ab-" + "s" * 32,
    ],
)
def test_parse_malformed(text):
    with pytest.raises(TokenRefused, match="the enrollment token is malformed"):
        parse(text)


def test_token_refused_is_a_refusal():
    assert issubclass(TokenRefused, Refused)
    assert TokenRefused.exit_code == 4


def test_check_unknown_token():
    _, text = _new()
    with pytest.raises(TokenRefused, match="the enrollment token is unknown"):
        check(None, parse(text)[1], NOW)


def test_check_wrong_secret_looks_like_unknown():
    token, _ = _new()
    _, other_text = _new()
    with pytest.raises(TokenRefused, match=r"^the enrollment token is unknown$"):
        check(token, parse(other_text)[1], NOW)


def test_check_revoked():
    token, text = _new()
    revoked = dataclasses.replace(token, revoked=True)
    with pytest.raises(TokenRefused, match=f"enrollment token {token.token_id} has been revoked"):
        check(revoked, parse(text)[1], NOW)


def test_check_expired_at_and_after_expiry():
    token, text = _new(ttl=timedelta(hours=1))
    secret = parse(text)[1]
    assert check(token, secret, NOW + timedelta(minutes=59, seconds=59)) is token
    for late in (timedelta(hours=1), timedelta(days=3)):
        with pytest.raises(
            TokenRefused,
            match=f"enrollment token {token.token_id} expired at 2025-03-01 13:00:00Z",
        ):
            check(token, secret, NOW + late)


def test_check_used_up():
    token, text = _new(uses=2)
    secret = parse(text)[1]
    assert check(dataclasses.replace(token, uses=1), secret, NOW)
    with pytest.raises(
        TokenRefused, match=rf"enrollment token {token.token_id} is used up \(2 of 2 uses\)"
    ):
        check(dataclasses.replace(token, uses=2), secret, NOW)


def test_check_revoked_wins_over_used_up_and_expired():
    token, text = _new(uses=1)
    spent = dataclasses.replace(token, uses=1, revoked=True)
    with pytest.raises(TokenRefused, match="revoked"):
        check(spent, parse(text)[1], NOW + timedelta(days=1))


@pytest.mark.parametrize("uses", [0, -1])
def test_new_token_needs_a_use(uses):
    with pytest.raises(ValueError, match="at least one use"):
        _new(uses=uses)


@pytest.mark.parametrize(
    "ttl", [timedelta(0), timedelta(seconds=-1), MAX_TTL + timedelta(seconds=1)]
)
def test_new_token_ttl_bounds(ttl):
    with pytest.raises(ValueError, match="ttl must be between 1s and 30d"):
        _new(ttl=ttl)


@pytest.mark.parametrize("ttl", [timedelta(seconds=1), MAX_TTL])
def test_new_token_ttl_limits_are_inclusive(ttl):
    token, _ = _new(ttl=ttl)
    assert token.expires_at - token.created_at == ttl
