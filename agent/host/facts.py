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


#: os-release ID and ID_LIKE words -> the package manager of that family.
FAMILIES = {
    "debian": "apt", "ubuntu": "apt",
    "rhel": "dnf", "fedora": "dnf", "centos": "dnf", "almalinux": "dnf", "rocky": "dnf",
}  # fmt: skip
#: Where os-release(5) is, in the order it is read.
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
#: Where the fallback looks for dpkg-query and rpm under another root.
_BIN_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin")


def os_release(root: Path = Path("/")) -> dict[str, str]:
    """The fields of the host's os-release(5) ({} when there is none):
    KEY=value lines, the value unquoted."""
    for name in OS_RELEASE:
        try:
            text = (root / name).read_text(errors="replace")
        except OSError:
            continue
        fields = {}
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and key and not key.startswith("#"):
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                    value = value[1:-1]
                fields[key] = value
        return fields
    return {}


def package_manager(setting: str = "", root: Path = Path("/")) -> str:
    """The host's package manager: ``setting`` when given (agent.toml
    `[agent] package_manager`); else the family os-release names, by its
    ID then each ID_LIKE word (Debian, Ubuntu: apt; RHEL, Fedora, CentOS,
    AlmaLinux, Rocky: dnf), whatever other tools are installed (a dnf host
    with dpkg's tools, a Debian host with rpm); only with no os-release, or
    one naming no family we know, the tool found (dpkg-query, then rpm).
    "" when none."""
    if setting:
        return setting
    fields = os_release(root)
    words = [fields.get("ID", ""), *fields.get("ID_LIKE", "").split()]
    for word in words:
        if word.lower() in FAMILIES:
            return FAMILIES[word.lower()]
    if _which("dpkg-query", root):
        return "apt"
    if _which("rpm", root):
        return "dnf"
    return ""


def _which(tool: str, root: Path) -> bool:
    if root == Path("/"):
        return shutil.which(tool) is not None
    return shutil.which(tool, path=os.pathsep.join(str(root / d) for d in _BIN_DIRS)) is not None


def collect(package_manager_setting: str = "") -> HostFacts:
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
        package_manager=package_manager(package_manager_setting),
    )
