"""What the agent knows about its host: OS, kernel, resources, identity of
this boot. Cheap to gather; sent at every check-in."""

from __future__ import annotations

import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import distro
from fleetpatch import __version__

from agent.host import sysinfo


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    os_id: str
    os_version: str
    os_codename: str
    os_like: str
    kernel: str
    arch: str
    cpu_count: int
    memory_bytes: int
    disk_total_bytes: int
    disk_free_bytes: int
    uptime_seconds: int
    boot_id: str
    machine_id: str
    timezone: str
    package_manager: str
    agent_version: str = __version__


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def boot_id() -> str:
    """Changes at every boot: how the agent tells a reboot happened."""
    return _read("/proc/sys/kernel/random/boot_id")


def local_timezone() -> str:
    """The host's IANA time zone name, or "" when it cannot be told."""
    name = _read("/etc/timezone")
    if name:
        return name
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        return "UTC" if not Path("/etc/localtime").exists() else ""
    marker = "zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else ""


def package_manager() -> str:
    if shutil.which("dpkg-query"):
        return "apt"
    if shutil.which("rpm"):
        return "dnf"
    return ""


def collect() -> HostFacts:
    uname = os.uname()  # platform.uname's, without loading the platform module
    disk = sysinfo.disk_usage("/")
    return HostFacts(
        hostname=socket.gethostname(),
        os_id=distro.id(),
        os_version=distro.version(),
        os_codename=distro.codename(),
        os_like=distro.like(),
        kernel=uname.release,
        arch=uname.machine,
        cpu_count=sysinfo.cpu_count(),
        memory_bytes=sysinfo.memory().total,
        disk_total_bytes=disk.total,
        disk_free_bytes=disk.free,
        uptime_seconds=max(0, int(time.time() - sysinfo.boot_time())),
        boot_id=boot_id(),
        machine_id=_read("/etc/machine-id"),
        timezone=local_timezone(),
        package_manager=package_manager(),
    )
