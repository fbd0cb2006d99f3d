"""controller.quietlog: a line the whole fleet repeats at once is said
once per interval, with how many were held back."""

from __future__ import annotations

import logging

import pytest

from controller.quietlog import MAX_KEYS, OncePer, Quiet


@pytest.fixture
def clock() -> list[float]:
    return [1000.0]


def _quiet(clock: list[float]) -> Quiet:
    return Quiet(logging.getLogger("test.quiet"), seconds=30, clock=lambda: clock[0])


def test_said_once_per_interval_then_with_the_count_held_back(caplog, clock):
    quiet = _quiet(clock)
    with caplog.at_level(logging.WARNING, "test.quiet"):
        for i in range(100):
            quiet.say("CheckIn", "CheckIn refused for %s: down", f"peer{i}")
        clock[0] += 31
        quiet.say("CheckIn", "CheckIn refused for %s: down", "peer100")
    assert [r.getMessage() for r in caplog.records] == [
        "CheckIn refused for peer0: down",
        "CheckIn refused for peer100: down (99 more like it in the last 31s)",
    ]


def test_each_key_has_its_own_interval(caplog, clock):
    quiet = _quiet(clock)
    with caplog.at_level(logging.WARNING, "test.quiet"):
        quiet.say("CheckIn", "a")
        quiet.say("ReportProgress", "b")
        quiet.say("CheckIn", "c")
    assert [r.getMessage() for r in caplog.records] == ["a", "b"]


def test_it_holds_a_bounded_number_of_keys(clock):
    quiet = _quiet(clock)
    for i in range(MAX_KEYS * 3):
        quiet.say(f"key{i}", "x")
    assert len(quiet._said) <= MAX_KEYS


def test_the_filter_passes_each_message_once_per_interval(caplog):
    logger = logging.getLogger("test.quiet.filter")
    once = OncePer(seconds=60)
    logger.addFilter(once)
    try:
        with caplog.at_level(logging.WARNING, "test.quiet.filter"):
            for _ in range(3):
                logger.warning("error connecting: %s", "refused")
                logger.warning("giving up after %d s", 10)
    finally:
        logger.removeFilter(once)
    assert [r.getMessage() for r in caplog.records] == [
        "error connecting: refused",
        "giving up after 10 s",
    ]


def test_the_filter_takes_messages_that_differ_by_an_address_as_one(caplog):
    """psycopg.pool names each connection it discards by its repr: a line
    per connection would pass it every time."""
    logger = logging.getLogger("test.quiet.address")
    once = OncePer(seconds=60)
    logger.addFilter(once)
    try:
        with caplog.at_level(logging.WARNING, "test.quiet.address"):
            for address in ("0x7f3a01", "0x7f3a02", "0x7f3b99"):
                logger.warning("discarding closed connection: <Connection [BAD] at %s>", address)
    finally:
        logger.removeFilter(once)
    assert [r.getMessage() for r in caplog.records] == [
        "discarding closed connection: <Connection [BAD] at 0x7f3a01>"
    ]
