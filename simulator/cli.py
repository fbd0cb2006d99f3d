"""`fleetpatch-sim`: rehearse campaigns on a simulated fleet (in progress)."""

from __future__ import annotations

import sys


def main() -> None:
    print("fleetpatch-sim: not built yet", file=sys.stderr)
    sys.exit(1)
