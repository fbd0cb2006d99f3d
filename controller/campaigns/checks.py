"""The campaign's verify checks: ``[[verify.checks]]`` entries, spelled and
validated exactly as the agent's own ``[[checks]]`` (fleetpatch.checkspec)."""

from __future__ import annotations

from fleetpatch.checkspec import Check, CheckKind, parse_check

VerifyCheck = Check  # a check a campaign asks for after patching

__all__ = ["CheckKind", "VerifyCheck", "parse_check"]
