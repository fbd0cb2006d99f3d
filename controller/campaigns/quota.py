"""Counts and shares: ``concurrency = 2`` or ``concurrency = "10%"``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from fleetpatch.tomltable import toml_type

_PERCENT = re.compile(r"^(\d+(\.\d+)?)%$")


@dataclass(frozen=True)
class Quota:
    """A count (``3``) or a percentage of a total (``"10%"``).

    Kept as an exact fraction: ``10%`` of 30 is 3, never 3.0000000000000004
    rounded up to 4.
    """

    amount: Fraction
    percent: bool

    def ceil_of(self, total: int) -> int:
        """For concurrency: a percentage rounds up and is at least 1."""
        if not self.percent:
            return int(self.amount)
        # Integer arithmetic on the exact fraction: Fraction's own is slow,
        # and every decision asks for a share.
        above, below = self.amount.numerator * total, self.amount.denominator * 100
        return max(1, -(-above // below))

    def floor_of(self, total: int) -> int:
        """For budgets and thresholds: a percentage rounds down (may be 0)."""
        if not self.percent:
            return int(self.amount)
        return self.amount.numerator * total // (self.amount.denominator * 100)

    def __str__(self) -> str:
        if not self.percent:
            return str(int(self.amount))
        shown = int(self.amount) if self.amount.denominator == 1 else float(self.amount)
        return f"{shown}%"


def count(value: int) -> Quota:
    return Quota(Fraction(value), percent=False)


def percent(value: int | str) -> Quota:
    return Quota(Fraction(value), percent=True)


def parse_quota(value: object, minimum: int) -> Quota:
    """An integer >= ``minimum`` or a string ``"N%"`` (N up to 100, and above
    0 when ``minimum`` is above 0); raises ValueError saying what is wrong."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, not {value}")
        return count(value)
    match = _PERCENT.fullmatch(value) if isinstance(value, str) else None
    if not match:
        shown = repr(value) if isinstance(value, str) else toml_type(value)
        example = "'10%'" if minimum else "'0%' or '5%'"
        raise ValueError(
            f"{shown} is neither a count (e.g. {max(minimum, 2)}) nor a percentage (e.g. {example})"
        )
    amount = Fraction(match[1])
    if amount > 100 or (minimum and amount == 0):
        low = "above 0%" if minimum else "at least 0%"
        raise ValueError(f"{value!r} must be {low} and at most 100%")
    return Quota(amount, percent=True)
