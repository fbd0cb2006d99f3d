"""The words of a work order that both ends speak: the step names an agent
reports (and the controller counts), the refusal marker, the reboot and
live-patch policies, and the agent's own package name. Defined once here;
the agent's state machine and the controller's campaign files import them.
Values are stored and sent, and never change once released."""

from __future__ import annotations

from enum import StrEnum


class OrderState(StrEnum):
    """The states of one work order on a host (agent.orders.states has the
    transitions); reported as the step of a progress report."""

    RECEIVED = "RECEIVED"
    PRECHECK = "PRECHECK"
    SNAPSHOT = "SNAPSHOT"
    APPLY = "APPLY"
    LIVEPATCH = "LIVEPATCH"
    RESTART = "RESTART"
    REBOOT = "REBOOT"
    REBOOTED = "REBOOTED"
    VERIFY = "VERIFY"
    REVERT = "REVERT"
    SUCCEEDED = "SUCCEEDED"
    PENDING_REBOOT = "PENDING_REBOOT"
    PENDING_RESTART = "PENDING_RESTART"
    REVERTED = "REVERTED"
    REVERT_FAILED = "REVERT_FAILED"
    FAILED = "FAILED"


# The step of the one report an agent sends for an order it refused to run
# (bad signature, another host's, a replay, against local policy): final,
# and counted as a failure.
REFUSED = "REFUSED"
# The order id a refusal is stored under when the order's own could not be
# read (unparseable bytes, a signature by an unknown key).
UNREADABLE_ORDER = "(unreadable)"


class RebootPolicy(StrEnum):
    """Whether an order may reboot the host (local policy may forbid it still)."""

    NEVER = "never"
    IF_REQUIRED = "if-required"
    ALWAYS = "always"


class LivepatchPolicy(StrEnum):
    """Whether a live patch may stand in for a reboot."""

    NEVER = "never"
    PREFER = "prefer"
    ONLY = "only"


class RestartPolicy(StrEnum):
    """What the agent does about services still running code an update
    replaced: restart them (auto), only report them, or not look at all."""

    AUTO = "auto"
    REPORT = "report"
    NEVER = "never"


# The agent's package: what agent-update campaigns install, what a patch
# never removes, and what a published release must be called.
AGENT_PACKAGE = "fleetpatch-agent"

# Bounds on what a work order names: a campaign file, an agent's plan and
# the controller's parsers all refuse longer ones (no distribution ships a
# package name or version near these).
MAX_PACKAGE_NAME = 200
MAX_VERSION = 200
