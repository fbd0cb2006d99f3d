"""Reboot signals: /run/reboot-required(.pkgs) and /boot read from real
files in a temp dir; `needrestart -b` parsed from outputs recorded from the
real tool's batch mode (its documented apt-dater format) and run through
a stand-in executable (needrestart is not installed on build machines: its
apt hook would restart services during the apt tests)."""

from __future__ import annotations

from agent.backends.subp import BASE_ENV, run
from agent.boot.decide import Reason
from agent.host.needs import (
    RebootSignals,
    installed_kernels,
    kernel_reasons,
    parse_needrestart,
    reboot_required_reasons,
    version_key,
)

# `needrestart -b` on a Debian 12 host after a kernel and a microcode update.
NEEDRESTART_KERNEL = """\
NEEDRESTART-VER: 3.6
NEEDRESTART-KCUR: 6.1.0-13-amd64
NEEDRESTART-KEXP: 6.1.0-17-amd64
NEEDRESTART-KSTA: 3
NEEDRESTART-UCSTA: 2
NEEDRESTART-UCCUR: 0x000000f4
NEEDRESTART-UCEXP: 0x000000f8
NEEDRESTART-SVC: systemd-journald.service
NEEDRESTART-SVC: ssh.service
NEEDRESTART-SESS: root @ session #3
"""
# ... and on one whose kernel is current, with services to restart only.
NEEDRESTART_CURRENT = """\
NEEDRESTART-VER: 3.6
NEEDRESTART-KCUR: 6.1.0-17-amd64
NEEDRESTART-KEXP: 6.1.0-17-amd64
NEEDRESTART-KSTA: 1
NEEDRESTART-SVC: cron.service
"""


def test_kernel_releases_sort_as_people_read_them():
    releases = ["6.1.0-9-amd64", "6.1.0-17-amd64", "6.1.0-13-amd64"]
    assert max(releases, key=version_key) == "6.1.0-17-amd64"
    rhel = ["5.14.0-284.11.1.el9_2.x86_64", "5.14.0-362.8.1.el9_3.x86_64"]
    assert max(rhel, key=version_key) == "5.14.0-362.8.1.el9_3.x86_64"


def test_a_newer_installed_kernel_is_a_kernel_reason(tmp_path):
    for release in ("6.1.0-13-amd64", "6.1.0-17-amd64"):
        (tmp_path / f"vmlinuz-{release}").touch()
    (tmp_path / "initrd.img-6.1.0-17-amd64").touch()
    installed = installed_kernels(tmp_path)
    assert installed == ["6.1.0-13-amd64", "6.1.0-17-amd64"]
    assert kernel_reasons("6.1.0-13-amd64", installed) == [
        Reason("kernel", "kernel 6.1.0-17-amd64 is installed, 6.1.0-13-amd64 is running", True)
    ]
    assert kernel_reasons("6.1.0-17-amd64", installed) == []
    assert kernel_reasons("6.18.44-container", []) == []  # a container: no /boot kernels


def test_reboot_required_names_its_packages(tmp_path):
    flag = tmp_path / "reboot-required"
    assert reboot_required_reasons(flag) == []
    flag.write_text("*** System restart required ***\n")
    assert reboot_required_reasons(flag) == [Reason("reboot-required", f"{flag} exists")]
    (tmp_path / "reboot-required.pkgs").write_text("linux-image-6.1.0-17-amd64\n")
    assert reboot_required_reasons(flag)[0].kernel is True
    (tmp_path / "reboot-required.pkgs").write_text("linux-image-6.1.0-17-amd64\nlibc6\nlibc6\n")
    reason = reboot_required_reasons(flag)[0]
    assert reason.kernel is False
    assert reason.detail.endswith("names libc6, linux-image-6.1.0-17-amd64")


def test_needrestart_batch_output():
    reasons = parse_needrestart(NEEDRESTART_KERNEL)
    assert [r.kernel for r in reasons] == [True, False]
    assert "kernel 6.1.0-13-amd64 is running, a new version (6.1.0-17-amd64)" in reasons[0].detail
    assert "microcode 0x000000f4" in reasons[1].detail
    assert parse_needrestart(NEEDRESTART_CURRENT) == []
    assert parse_needrestart("") == []


def test_the_collector_runs_every_probe_and_survives_a_broken_one(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "needrestart"
    tool.write_text(f"#!/bin/sh\n[ \"$1\" = -b ] || exit 2\ncat <<'EOF'\n{NEEDRESTART_KERNEL}EOF\n")
    tool.chmod(0o755)
    (tmp_path / "vmlinuz-6.1.0-17-amd64").touch()
    env = {"PATH": f"{bin_dir}:{BASE_ENV['PATH']}"}

    def broken() -> list[Reason]:
        raise OSError("no such file")

    signals = RebootSignals(
        lambda: "6.1.0-13-amd64",
        run=lambda argv, **kw: run(argv, **{**kw, "env": env}),
        reboot_required=tmp_path / "reboot-required",
        boot_dir=tmp_path,
        extra=[broken, lambda: [Reason("needs-restarting", "updated since boot: glibc")]],
    )
    sources = [r.source for r in signals.collect()]
    assert sources == ["kernel", "needrestart", "needrestart", "needs-restarting"]


def test_no_needrestart_is_no_signal(tmp_path):
    signals = RebootSignals(
        lambda: "6.1.0-13-amd64",
        run=lambda argv, **kw: run(argv, **{**kw, "env": {"PATH": str(tmp_path)}}),
        reboot_required=tmp_path / "reboot-required",
        boot_dir=tmp_path,
    )
    assert signals.collect() == []
