"""The host figures every check-in carries (facts, resource checks), read
from the kernel as psutil reads them on Linux, without psutil: importing it
costs the daemon about 0.9 MiB, kept for as long as it runs (issue 18: at
most 40 MiB idle). psutil stays for what needs more (`process` health
checks, and memory on kernels older than 3.14); tests/unit/test_sysinfo.py
holds these figures to psutil's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MEMINFO = Path("/proc/meminfo")
STAT = Path("/proc/stat")


def cpu_count() -> int:
    """Online CPUs (psutil.cpu_count(): sysconf(_SC_NPROCESSORS_ONLN))."""
    return os.cpu_count() or 1


def load_average() -> float:
    """The 1-minute load average (psutil.getloadavg is os.getloadavg)."""
    return os.getloadavg()[0]


@dataclass(frozen=True)
class Memory:
    total: int  # bytes
    available: int


def memory(meminfo: Path = MEMINFO) -> Memory:
    """psutil.virtual_memory()'s total and available: MemTotal and
    MemAvailable of /proc/meminfo (the kernel's own estimate). Where that
    is missing (Linux before 3.14), 0 or past the total (psutil's cases of
    a kernel bug and of a container), psutil's own reckoning."""
    fields: dict[str, int] = {}
    for line in meminfo.read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("MemTotal", "MemAvailable"):
            fields[name] = int(value.split()[0]) * 1024  # kB
    total, available = fields["MemTotal"], fields.get("MemAvailable", 0)
    if not 0 < available <= total:
        import psutil

        found = psutil.virtual_memory()
        return Memory(found.total, found.available)
    return Memory(total, available)


@dataclass(frozen=True)
class Disk:
    total: int  # bytes
    used: int
    free: int  # for unprivileged users, as df shows it


def disk_usage(path: str = "/") -> Disk:
    """psutil.disk_usage(path)'s total, used and free (statvfs)."""
    st = os.statvfs(path)
    return Disk(
        total=st.f_blocks * st.f_frsize,
        used=(st.f_blocks - st.f_bfree) * st.f_frsize,
        free=st.f_bavail * st.f_frsize,
    )


def boot_time(stat: Path = STAT) -> float:
    """When the host booted, in seconds since the epoch (psutil.boot_time:
    btime of /proc/stat)."""
    for line in stat.read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError(f"no btime in {stat}")
