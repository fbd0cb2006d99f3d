"""Waiting in tests: for a condition, never for an amount of time.

A deadline here is a ceiling for a broken run, not an estimate of a healthy
one: a test that passes returns as soon as its condition holds, so a
generous deadline costs nothing on an idle machine and keeps a loaded one
(CI sharing two cores with other work) from failing a correct test. Every
deadline goes through :func:`scaled`, so a slower machine can stretch them
all at once with ``FLEETPATCH_TEST_TIMEOUT_SCALE`` (a factor, default 1)
instead of a test at a time.

Poll with a condition that is monotonic ("at least two check-ins"), never
with an exact value: a poll through a slow call can step over the value
("checkins == 2" misses 1 -> 3).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

SCALE_ENV = "FLEETPATCH_TEST_TIMEOUT_SCALE"


def timeout_scale() -> float:
    """The factor every test deadline is multiplied by (>= 1)."""
    raw = os.environ.get(SCALE_ENV, "1")
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"{SCALE_ENV}={raw!r} is not a number") from None
    return max(1.0, scale)


def scaled(seconds: float) -> float:
    """``seconds`` stretched by the machine's timeout scale."""
    return seconds * timeout_scale()


def wait_for(
    what: str,
    probe: Callable[[], T],
    done: Callable[[T], bool] = bool,
    *,
    timeout: float = 60,
    interval: float = 0.2,
    explain: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until ``done(value)`` holds and return that value.

    Fails the test after ``scaled(timeout)`` seconds, naming ``what`` and
    the last value seen (which usually says why) and what ``explain``
    returns (a log, say)."""
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            said = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(
                f"timed out after {limit:.0f}s waiting until {what}; last: {value!r}{said}"
            )
        time.sleep(interval)


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after the
    (scaled) ``timeout``."""
    wait_for(what, check, timeout=timeout, interval=0.3)


def stop_group(proc: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float = 30) -> None:
    """End ``proc``, started with ``start_new_session=True``, with every
    process of its group: SIGTERM, then SIGKILL after ``timeout``; and
    SIGKILL to any of its group left behind (workers outlive their parent)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def sigint_not_ignored() -> Iterator[None]:
    """Children started within take SIGINT as a terminal's Ctrl-C, even when
    this process ignores it (a shell's background job does), since exec
    resets a handled signal to its default and keeps an ignored one."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
