"""Finding what runs replaced code: /proc texts parsed, a real process
whose binary is replaced under it found, and units told from scopes."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.host.restarts import (
    PathResolver,
    Services,
    Stale,
    deleted_paths,
    parse_needrestart_services,
    scan,
    unit_of,
)

MAPS = """\
55d0c8a00000-55d0c8a2c000 r--p 00000000 08:01 1311 /usr/sbin/nginx (deleted)
7f1c2a000000-7f1c2a200000 r-xp 00000000 08:01 2244 /usr/lib/x86_64-linux-gnu/libssl.so.3 (deleted)
7f1c2b000000-7f1c2b100000 r-xp 00000000 08:01 2245 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1c2c000000-7f1c2c001000 rw-s 00000000 00:01 99 /memfd:pulse (deleted)
7f1c2d000000-7f1c2d021000 rw-p 00000000 00:00 0 [heap]
7f1c2e000000-7f1c2e001000 r--p 00000000 08:01 3000 /opt/app/my file.so (deleted)
7f1c2f000000-7f1c2f001000 rw-p 00000000 00:00 0
"""


def test_deleted_paths_are_the_replaced_files_a_process_maps():
    assert deleted_paths(MAPS) == {
        "/usr/sbin/nginx", "/usr/lib/x86_64-linux-gnu/libssl.so.3", "/memfd:pulse",
        "/opt/app/my file.so",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        ("0::/system.slice/nginx.service\n", ("nginx.service", "")),
        ("0::/system.slice/system-getty.slice/getty@tty1.service\n", ("getty@tty1.service", "")),
        ("0::/system.slice/docker.service/payload\n", ("docker.service", "")),
        ("0::/user.slice/user-1000.slice/session-3.scope\n", ("", "session-3.scope")),
        ("0::/init.scope\n", ("", "init.scope")),
        (  # a user manager's own units belong to the user manager
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/pipewire.service\n",
            ("user@1000.service", ""),
        ),
        ("12:cpu:/x\n1:name=systemd:/system.slice/cron.service\n", ("cron.service", "")),
        ("0::/\n", ("", "")),
        ("", ("", "")),
    ],
)
def test_the_unit_of_a_process_comes_from_its_cgroup(cgroup, expected):
    assert unit_of(cgroup) == expected


def test_needrestart_batch_output_names_the_services():
    out = (
        "NEEDRESTART-VER: 3.6\nNEEDRESTART-KSTA: 1\nNEEDRESTART-SVC: nginx.service\n"
        "NEEDRESTART-SVC: cron\nNEEDRESTART-SESS: root @ session #3\n"
    )
    assert parse_needrestart_services(out) == ["nginx.service", "cron.service"]


def test_package_paths_are_resolved_through_symlinked_directories(tmp_path):
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    resolve = PathResolver()
    assert resolve(f"{tmp_path}/lib/libssl.so.3") == f"{tmp_path}/usr/lib/libssl.so.3"
    assert resolve.all([f"{tmp_path}/usr/lib/x"]) == {f"{tmp_path}/usr/lib/x"}


@pytest.fixture
def old_binary(tmp_path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A running process whose binary is then replaced the way dpkg does
    it: a new file renamed over the old one."""
    binary = tmp_path / "bin" / "fp-sleeper"
    binary.parent.mkdir()
    sleep = shutil.which("sleep")
    assert sleep is not None
    shutil.copy(sleep, binary)
    proc = subprocess.Popen([str(binary), "60"])
    try:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{proc.pid}/exe").resolve() != binary.resolve():
            assert time.monotonic() < deadline, "the process never ran its binary"
            time.sleep(0.01)
        shutil.copy(sleep, binary.with_suffix(".new"))
        os.rename(binary.with_suffix(".new"), binary)
        yield proc, binary
    finally:
        proc.kill()
        proc.wait()


def test_a_real_process_running_a_replaced_binary_is_found(old_binary):
    proc, binary = old_binary
    found = scan({str(binary.resolve())})
    assert [s.pid for s in found] == [proc.pid]
    assert found[0].file == str(binary.resolve())
    assert found[0].command == "fp-sleeper"
    # Files of other packages, or the process left out, find nothing.
    assert scan({"/usr/sbin/nothing-here"}) == []
    assert scan({str(binary.resolve())}, skip={proc.pid}) == []


def test_services_scan_only_the_files_of_the_changed_packages(old_binary):
    proc, binary = old_binary
    owned = {"fp-sleeper": [str(binary)], "other": ["/usr/bin/other"]}
    services = Services(lambda names: [f for n in names for f in owned[n]])
    assert [s.pid for s in services.stale(["fp-sleeper"])] == [proc.pid]
    assert services.stale(["other"]) == []
    assert services.stale([]) == []


def test_units_the_host_tool_names_are_added_once(old_binary):
    _, binary = old_binary
    services = Services(lambda names: [str(binary)], tool=lambda: ["cron.service"])
    found = services.stale(["fp-sleeper"])
    assert Stale(0, "", "cron.service") in found
    assert found[-1].describe() == "cron.service"
