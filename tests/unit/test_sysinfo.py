"""agent.host.sysinfo gives what psutil gives (the check-in's facts and
resource checks read these without psutil)."""

from __future__ import annotations

import os

import psutil

from agent.host import sysinfo


def test_cpus_load_and_boot_time_are_psutils():
    assert sysinfo.cpu_count() == psutil.cpu_count()
    assert sysinfo.load_average() == psutil.getloadavg()[0]
    assert sysinfo.boot_time() == psutil.boot_time()


def test_memory_is_psutils():
    ours, theirs = sysinfo.memory(), psutil.virtual_memory()
    assert ours.total == theirs.total
    # Available memory moves between two reads: within a few MiB.
    assert abs(ours.available - theirs.available) < 64 * 2**20


def test_memory_without_memavailable_is_psutils_reckoning(tmp_path):
    """An old kernel's /proc/meminfo (no MemAvailable), or one where it
    reads 0 or more than the total: psutil works it out, as before."""
    for available in ("", "MemAvailable: 0 kB\n", "MemAvailable: 99999999999 kB\n"):
        meminfo = tmp_path / "meminfo"
        meminfo.write_text(f"MemTotal: 1024 kB\nMemFree: 512 kB\n{available}")
        found = sysinfo.memory(meminfo)
        assert found.total == psutil.virtual_memory().total
        assert found.available > 0


def test_disk_usage_is_psutils():
    for path in ("/", os.getcwd()):
        ours, theirs = sysinfo.disk_usage(path), psutil.disk_usage(path)
        assert ours.total == theirs.total
        assert abs(ours.used - theirs.used) < 64 * 2**20  # other writers
        assert abs(ours.free - theirs.free) < 64 * 2**20
