"""Local policy: what this host allows any work order to do.

The host's owner writes it in agent.toml ``[policy]``; the controller
cannot change it. A compromised controller can therefore ask for no more
than the policy allows: no commands unless the host opts in, no packages
the host protects, no sources it does not trust, no reboots if it says so.
An order or plan outside policy is refused before anything changes.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetpatch.orderspec import AGENT_PACKAGE
from fleetpatch.tomltable import Table

from agent.backends.base import Plan
from agent.host.checks import Kind
from agent.orders.workorder import Action, OrderRefused, Reboot, RefusalReason, WorkOrder

# Services an update never restarts unless the host's owner says otherwise:
# restarting them ends logins or desktops (dbus, logind, gettys, user
# managers, display managers), cuts the network the agent reports over, or
# stops the VMs and containers they run. needrestart keeps much the same
# list (its override_rc), for the same reasons.
DEFAULT_NEVER_RESTART = (
    "dbus.service",
    "dbus-broker.service",
    "systemd-logind.service",
    "user@*.service",
    "getty@*.service",
    "serial-getty@*.service",
    "console-getty.service",
    "display-manager.service",
    "gdm*.service",
    "sddm.service",
    "lightdm.service",
    "NetworkManager*.service",
    "networking.service",
    "systemd-networkd.service",
    "wpa_supplicant*.service",
    "ModemManager.service",
    "openvpn*.service",
    "strongswan*.service",
    "wg-quick@*.service",
    "docker.service",
    "containerd.service",
    "libvirtd.service",
    "virtlogd.service",
    "virtlockd.service",
    "lxcfs.service",
    "emergency.service",
    "rescue.service",
)


@dataclass(frozen=True)
class Policy:
    allow_reboot: bool = True
    allow_order_commands: bool = False
    never_touch: tuple[str, ...] = ()
    allowed_sources: tuple[str, ...] = ()
    max_packages: int = 200
    # Units (glob patterns) an update never restarts; processes in them that
    # still run replaced code are reported "pending restart" instead.
    never_restart: tuple[str, ...] = DEFAULT_NEVER_RESTART
    # Agent self-update: whether orders may update this agent, to which
    # versions, and the release key (pinned here, never sent) they must carry.
    allow_agent_update: bool = True
    allow_agent_downgrade: bool = False
    release_key: Path = Path("/etc/fleetpatch/release.pub")


def policy_from_config(table: Mapping[str, Any], where: str) -> Policy:
    """``[policy]`` of agent.toml (``where``); raises TableError (a
    ValueError) naming the bad field."""
    return policy_from_table(Table(dict(table), "policy", where))


def policy_from_table(t: Table) -> Policy:
    """``[policy]`` read from its table; raises TableError naming the field."""
    default = Policy()

    def flag(key: str) -> bool:
        return bool(t.get(key, bool, getattr(default, key)))

    def patterns(key: str) -> tuple[str, ...]:
        values = t.strings(key) if t.has(key) else getattr(default, key)
        if not all(values):
            raise t.error(key, "must be an array of non-empty patterns")
        return tuple(values)

    max_packages = t.get("max_packages", int, default.max_packages)
    if max_packages < 1:
        raise t.error("max_packages", f"must be a whole number >= 1, not {max_packages}")
    release_key = t.get("release_key", str, str(default.release_key))
    if not release_key.startswith("/"):
        raise t.error("release_key", f"must be an absolute path, not {release_key!r}")
    policy = Policy(
        allow_reboot=flag("allow_reboot"),
        allow_order_commands=flag("allow_order_commands"),
        never_touch=patterns("never_touch"),
        never_restart=patterns("never_restart"),
        allowed_sources=patterns("allowed_sources"),
        max_packages=max_packages,
        allow_agent_update=flag("allow_agent_update"),
        allow_agent_downgrade=flag("allow_agent_downgrade"),
        release_key=Path(release_key),
    )
    t.finish()
    return policy


def _matches(name: str, patterns: tuple[str, ...]) -> str | None:
    return next((p for p in patterns if fnmatch.fnmatchcase(name, p)), None)


def restart_held(unit: str, policy: Policy) -> str | None:
    """Why ``unit`` must not be restarted by an update, or None."""
    pattern = _matches(unit, policy.never_restart)
    return f"policy.never_restart {pattern!r}" if pattern else None


def check_order(order: WorkOrder, policy: Policy) -> None:
    """Refuse an order this host does not allow (OrderRefused, POLICY)."""

    def refuse(why: str) -> OrderRefused:
        return OrderRefused(
            RefusalReason.POLICY, f"work order {order.order_id} refused by local policy: {why}",
            order.order_id,
        )  # fmt: skip

    if order.action is Action.AGENT_UPDATE:
        if not policy.allow_agent_update:
            raise refuse("it updates the agent and policy.allow_agent_update is false")
        pattern = _matches(AGENT_PACKAGE, policy.never_touch)
        if pattern:
            raise refuse(f"package {AGENT_PACKAGE} is protected (policy.never_touch {pattern!r})")
    commands = [c.name for c in order.checks if c.kind is Kind.COMMAND]
    if commands and not policy.allow_order_commands:
        raise refuse(
            f"it asks to run command check(s) {', '.join(commands)} "
            "and policy.allow_order_commands is false"
        )
    if order.reboot is Reboot.ALWAYS and not policy.allow_reboot:
        raise refuse("it demands a reboot and policy.allow_reboot is false")
    for target in order.targets:
        pattern = _matches(target.name, policy.never_touch)
        if pattern:
            raise refuse(f"package {target.name} is protected (policy.never_touch {pattern!r})")


def plan_violation(plan: Plan, policy: Policy) -> str | None:
    """Why a plan is outside policy, or None when it is within it."""
    if len(plan.changes) > policy.max_packages:
        return (
            f"the update touches {len(plan.changes)} packages, "
            f"more than policy.max_packages ({policy.max_packages})"
        )
    for change in plan.changes:
        if change.name == AGENT_PACKAGE and not change.new:
            # Its removal would stop this agent and wait for it, while it
            # waits for the removal: never as a side effect of a patch.
            return f"the update would remove {AGENT_PACKAGE}, this agent itself"
        pattern = _matches(change.name, policy.never_touch)
        if pattern:
            return f"the update touches protected package {change.name} ({pattern!r})"
        if (
            change.new
            and policy.allowed_sources
            and not _matches(change.origin, policy.allowed_sources)
        ):
            return (
                f"{change.name} {change.new} comes from {change.origin!r}, "
                "which policy.allowed_sources does not list"
            )
    return None
