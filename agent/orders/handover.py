"""Handing over to another version of the agent: the exception that makes
this process exit, and the check the daemon makes at start-up and after
each order. Kept apart from `selfupdate` (the agent-update steps) so that
the idle daemon can make the check without loading the order runner."""

from __future__ import annotations

from fleetpatch.agentrelease import Family
from fleetpatch.orderspec import AGENT_PACKAGE

from agent.backends.base import PackageBackend


class HandOver(Exception):
    """This process must exit so that the agent now installed takes over.

    Raised by VERIFY in the old process once the new version is installed;
    the CLI exits cleanly and systemd starts the new version (the postinst's
    restart, or Restart=always).
    """


def family(backend: PackageBackend) -> Family | None:
    """The package family this host's backend installs."""
    return Family.of_manager(getattr(backend, "name", ""))


def installed_version(backend: PackageBackend) -> str:
    """The installed agent package's version field: the Debian Version,
    or the RPM Version (without epoch and release, which our packages
    do not vary: the order names the version)."""
    found = backend.versions([AGENT_PACKAGE]).get(AGENT_PACKAGE, "")
    if family(backend) is Family.RPM and found:
        found = found.split(":", 1)[-1].rsplit("-", 1)[0]
    return found


def handover_due(backend: PackageBackend, running_version: str) -> str | None:
    """Why this process must exit now (the installed agent is another
    version than the one running), or None."""
    installed = installed_version(backend)
    try:
        running = (family(backend) or Family.DEB).package_version(running_version)
    except ValueError:
        return None  # a development build: nothing to hand over to
    if installed and installed != running:
        return f"{AGENT_PACKAGE} {installed} is installed; this agent ({running}) exits"
    return None
