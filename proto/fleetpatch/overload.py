"""How a busy controller tells a caller when to come back: gRPC status
RESOURCE_EXHAUSTED with a ``fleetpatch-retry-after-ms`` trailer (integer
milliseconds). The controller writes it, the agent reads it."""

from __future__ import annotations

RETRY_AFTER_KEY = "fleetpatch-retry-after-ms"
MAX_RETRY_AFTER_SECONDS = 3600.0  # a bogus hint must not park the fleet for days


def retry_after_trailer(seconds: float) -> tuple[tuple[str, str]]:
    """The trailing metadata asking a caller to wait ``seconds`` (at least 1 ms)."""
    return ((RETRY_AFTER_KEY, str(max(1, round(seconds * 1000)))),)


def retry_after(metadata: object) -> float | None:
    """Seconds from the ``fleetpatch-retry-after-ms`` entry of gRPC
    metadata; None when absent, not a non-negative integer, or unreadable.
    Capped at MAX_RETRY_AFTER_SECONDS."""
    try:
        for key, value in metadata or ():  # type: ignore[attr-defined]
            if key != RETRY_AFTER_KEY:
                continue
            text = value.decode() if isinstance(value, bytes) else str(value)
            millis = int(text.strip())
            return None if millis < 0 else min(millis / 1000, MAX_RETRY_AFTER_SECONDS)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None
    return None
