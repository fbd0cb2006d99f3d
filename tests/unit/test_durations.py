"""fleetpatch.durations: what people type in config files and on the command line."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fleetpatch.durations import MAX_SECONDS, format_duration, parse_duration
from hypothesis import assume, given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("90", 90),
        ("30s", 30),
        ("5m", 300),
        ("2h", 7200),
        ("7d", 7 * 86400),
        ("2w", 14 * 86400),
        ("1h30m", 5400),
        ("1d2h3m4s", 86400 + 7200 + 180 + 4),
        ("  15m\n", 900),  # stray whitespace from a file or a shell
        ("1H30M", 5400),  # case does not matter
        ("90s", 90),
        ("1m1m", 120),  # repeated units add up
    ],
)
def test_parse_accepts_what_people_write(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "m", "5x", "-5m", "1.5h", "5 m", "1h 30m", "h1", "5mm", "30sec", "1e3", "+5"],
)
def test_parse_rejects_with_a_message_that_shows_how(text):
    with pytest.raises(ValueError, match="is not a duration") as caught:
        parse_duration(text)
    message = str(caught.value)
    assert repr(text) in message
    assert "30m" in message  # names an example of the right spelling


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1, "1s"),
        (59, "59s"),
        (60, "1m"),
        (90, "1m30s"),
        (3600, "1h"),
        (86400, "1d"),
        (86400 + 3600 + 60 + 1, "1d1h1m1s"),
        (14 * 86400, "14d"),
    ],
)
def test_format_largest_units_first(seconds, text):
    assert format_duration(timedelta(seconds=seconds)) == text


def test_format_of_negative_or_subsecond_is_zero():
    assert format_duration(timedelta(seconds=-5)) == "0s"
    assert format_duration(timedelta(milliseconds=999)) == "0s"


def test_format_drops_fractions_of_a_second():
    assert format_duration(timedelta(seconds=61, milliseconds=900)) == "1m1s"


@given(st.integers(min_value=0, max_value=100 * 365 * 86400))
def test_format_then_parse_round_trips(seconds):
    delta = timedelta(seconds=seconds)
    assert parse_duration(format_duration(delta)) == delta


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.sampled_from("smhdw")),
        min_size=1,
        max_size=5,
    )
)
def test_parse_sums_its_parts(parts):
    text = "".join(f"{n}{u}" for n, u in parts)
    size = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    assume(sum(n * size[u] for n, u in parts) <= MAX_SECONDS)
    assert parse_duration(text) == timedelta(seconds=sum(n * size[u] for n, u in parts))


# At most 8 characters: short enough to be mostly within the 100-year
# bound, long enough to pass it ("6000w").
@given(st.text(alphabet="0123456789smhdw -.:xyz", max_size=8))
def test_parse_either_succeeds_or_raises_value_error(text):
    spelled = text.strip().lower()
    well_formed = spelled.isdigit() or (
        spelled != "" and re.fullmatch(r"(\d+[smhdw])+", spelled) is not None
    )
    if well_formed:
        try:
            assert parse_duration(text) >= timedelta(0)
        except ValueError as exc:
            assert "is too long" in str(exc)  # noqa: PT017 - either outcome is checked
    else:
        with pytest.raises(ValueError, match="is not a duration"):
            parse_duration(text)


@pytest.mark.parametrize("text", ["99999999999d", "99999999999999999999"])
def test_parse_too_large_raises_value_error(text):
    with pytest.raises(ValueError, match=r"is not a duration|too large|too long"):
        parse_duration(text)


def test_parse_superscript_digit_gets_the_friendly_message():
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration("²")
