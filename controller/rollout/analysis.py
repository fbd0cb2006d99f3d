"""Asking Prometheus the queries of a campaign's ``[[rollout.analysis]]``.

One instant query per analysis (`/api/v1/query`), answered with one number:
a scalar, or the worst sample of a vector (the highest against a ``max``,
the lowest against a ``min``), so a query over several series holds only
when all of them do. No usable answer (Prometheus unreachable or failing,
no series, not a number) is a reading without a value: the rings it guards
wait, and nothing is halted on it (`gates.analysis_holds`).

Only the standard library speaks HTTP here: one GET with a timeout is all
it takes, and a client library would be a dependency for nothing.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any

from controller.campaigns.spec import Analysis
from controller.campaigns.tallies import Reading

TIMEOUT = 5.0  # seconds per query: a slow Prometheus holds, never passes
MAX_ANSWER = 4 * 1024 * 1024  # bytes read of one answer


class QueryError(Exception):
    """Prometheus gave no usable answer; the message says why, in one line."""


def query(base_url: str, promql: str, timeout: float = TIMEOUT) -> Any:
    """The ``data`` of Prometheus' answer to an instant query. Raises QueryError."""
    url = f"{base_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - http(s) only
            body = answer.read(MAX_ANSWER)
    except urllib.error.HTTPError as exc:
        body = exc.read(MAX_ANSWER)  # Prometheus explains a bad query in the body
        raise QueryError(_error_of(body) or f"HTTP {exc.code} from {base_url}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise QueryError(f"Prometheus at {base_url} cannot be reached ({reason})") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise QueryError(f"{base_url} did not answer as Prometheus does") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise QueryError(_error_of(body) or f"{base_url} answered {str(doc)[:200]}")
    return doc.get("data")


def _error_of(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    if isinstance(doc, dict) and doc.get("error"):
        return f"Prometheus: {doc.get('errorType', 'error')}: {doc['error']}"
    return ""


def value_of(analysis: Analysis, data: Any) -> float:
    """The one number an answer stands for. Raises QueryError."""
    kind = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        values = [result[1]]
    elif kind == "vector" and isinstance(result, list):
        values = [s.get("value", [None, None])[1] for s in result if isinstance(s, dict)]
    else:
        raise QueryError(f"the query answers {kind or 'nothing usable'}, not a number")
    numbers = []
    for text in values:
        try:
            number = float(text)
        except (TypeError, ValueError):
            continue
        if not math.isnan(number):
            numbers.append(number)
    if not numbers:
        raise QueryError("the query returns no series" if not values else "no number in its answer")
    return max(numbers) if analysis.max is not None else min(numbers)


def read(base_url: str, analysis: Analysis, now: datetime, timeout: float = TIMEOUT) -> Reading:
    """Ask ``analysis`` once: a reading with its value, or without one and why."""
    try:
        return Reading(value_of(analysis, query(base_url, analysis.query, timeout)), now)
    except QueryError as exc:
        return Reading(None, now, str(exc))


def check(base_url: str, analysis: Analysis, timeout: float = TIMEOUT) -> str | None:
    """Why ``analysis`` cannot be used (Prometheus unreachable, the query
    does not parse), or None. Asked once when a campaign is created; an
    answer without series is fine then (the application may not be
    deployed yet)."""
    try:
        query(base_url, analysis.query, timeout)
    except QueryError as exc:
        return str(exc)
    return None
