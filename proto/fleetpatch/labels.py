"""Host labels (``role=web``) and the names of regions: one spelling for
the agent's ``--label``, the controller's tokens and campaign selectors."""

from __future__ import annotations

import re
from collections.abc import Iterable

_KEY = re.compile(r"^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$")
_VALUE = re.compile(r"^[A-Za-z0-9._-]{0,63}$")
_REGION = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_LABELS = 32
MAX_RING = 99


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    """Parse ``key=value`` items; raises ValueError naming the bad one."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"label {item!r} is not KEY=VALUE")
        check_label(key, value)
        if key in labels:
            raise ValueError(f"label {key!r} is given twice")
        labels[key] = value
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels are allowed")
    return labels


def check_label(key: str, value: str) -> None:
    if not _KEY.fullmatch(key):
        raise ValueError(
            f"label key {key!r} must be lowercase letters, digits, '.', '_', '-', '/' "
            "(1-63 characters, starting and ending with a letter or digit)"
        )
    if not _VALUE.fullmatch(value):
        raise ValueError(
            f"label value {value!r} for {key!r} must be letters, digits, '.', '_', '-' "
            "(at most 63 characters)"
        )


def check_region(region: str) -> str:
    if not _REGION.fullmatch(region):
        raise ValueError(
            f"region {region!r} must be lowercase letters, digits and '-' (1-63 characters)"
        )
    return region


def check_ring(ring: int) -> int:
    if not 0 <= ring <= MAX_RING:
        raise ValueError(f"ring {ring} is out of range (0-{MAX_RING})")
    return ring
