"""Every benchmark refuses a count or a duration out of range in one
line naming the option, exit 2, before it starts anything (a host count
of 0 ended in a traceback, a negative duration in a run without end)."""

from __future__ import annotations

import argparse

import pytest

from benchmarks.options import at_least, seconds
from tests.support.benchruns import run_benchmark

WHOLE, SECONDS = "is not a whole number", "is not a number of seconds"


@pytest.mark.parametrize(
    ("module", "option", "value", "said"),
    [
        ("checkin_load", "--hosts", "0", f"{WHOLE} of at least 1"),
        ("checkin_load", "--seconds", "-1", f"{SECONDS} above 0"),
        ("campaign_load", "--concurrency", "0", WHOLE),
        ("hostile_load", "--hosts", "x", WHOLE),
        ("herd", "--outage", "nan", f"{SECONDS} of at least 0"),
        ("metrics_scrape", "--interval", "0", SECONDS),
        ("vulns", "--records", "0", f"{WHOLE} of at least 1"),
        ("audit_export", "--port", "70000", f"{WHOLE} from 1 to 65535"),
        ("agent_footprint", "--checkins", "0", WHOLE),
        ("sim_fleet", "--baseline-hosts", "-3", WHOLE),
        ("snapshot", "--packages", "0", f"{WHOLE} of at least 1"),
    ],
)
def test_out_of_range_is_one_line_and_exit_2(
    module: str, option: str, value: str, said: str
) -> None:
    done = run_benchmark(module, option, value)
    assert done.returncode == 2, done.stderr
    shown = repr(value) if said == WHOLE and not value.lstrip("-").isdigit() else value
    last = done.stderr.strip().splitlines()[-1]  # one line after argparse's usage
    assert f"argument {option}: {shown} {said}" in last, last
    assert "Traceback" not in done.stderr


def test_the_types_take_what_is_in_range() -> None:
    assert at_least(1)("1") == 1
    assert at_least(1)("1_000") == 1000
    assert at_least(1, 65535)("65535") == 65535
    assert seconds()("0.5") == 0.5
    assert seconds(above=False)("0") == 0.0
    for parse, text in ((at_least(1), "0"), (at_least(1, 9), "10"), (seconds(), "0"),
                        (seconds(), "inf"), (seconds(above=False), "-0.1")):  # fmt: skip
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
