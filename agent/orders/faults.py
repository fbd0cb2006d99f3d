"""A test seam for crash tests: kill the agent at a chosen point.

``FLEETPATCH_FAULT=enter:APPLY`` kills the process with SIGKILL right after
APPLY is journaled, before its side effect; ``done:APPLY`` right after the
side effect, before the next state is journaled. Unset, nothing happens.
"""

from __future__ import annotations

import os
import signal


def hit(point: str, state: str) -> None:
    if os.environ.get("FLEETPATCH_FAULT") == f"{point}:{state}":
        os.kill(os.getpid(), signal.SIGKILL)
