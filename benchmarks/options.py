"""argparse types for the benchmarks' options: a count or a number of
seconds out of range is refused by argparse itself, in one line naming
the option, exit 2, before anything is started (a host count of 0 used
to end in a traceback from the first token made for it, a negative
duration in a run that never ends)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def at_least(low: int = 1, high: int | None = None) -> Callable[[str], int]:
    """An integer from ``low`` (to ``high``)."""
    allowed = f"from {low} to {high}" if high is not None else f"of at least {low}"

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is not a whole number {allowed}")
        return value

    return parse


def seconds(low: float = 0.0, *, above: bool = True) -> Callable[[str], float]:
    """A finite number of seconds above ``low`` (from ``low`` when not ``above``)."""
    allowed = f"above {low:g}" if above else f"of at least {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not math.isfinite(value) or value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"{text} is not a number of seconds {allowed}")
        return value

    return parse
