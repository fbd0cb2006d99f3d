"""The reboot path end to end: the real agent, real apt and dpkg, a real
controller, in a sandboxed copy of this host. The reboot itself is the one
test double (tests/support/reboot_host.py): `fp-reboot` records the call,
ends the agent as a shutdown does, and brings the "machine" back with a new
boot id running the newest kernel in /boot (or GRUB's saved entry). The
test then starts the agent again, as systemd would at boot, and checks it
resumes at REBOOTED, verifies, and succeeds or reverts, with the
controller told the outcome once. SIGKILLs from the fault seam
(FLEETPATCH_FAULT) around the reboot must still end consistent.
"""

from __future__ import annotations

import sqlite3

import pytest
from fleetpatch.v1 import types_pb2

from tests.support.apthost import AGENT, STATE
from tests.support.debrepo import dpkg_status
from tests.support.reboot_host import NEW_KERNEL, OLD_KERNEL, RebootHost, demo_deb, kernel_deb

pytestmark = pytest.mark.root
IF_REQUIRED = types_pb2.REBOOT_POLICY_IF_REQUIRED


def _prepare(apt_host, deb_repo, broken: bool = False, reboot_timeout: str = "30s") -> RebootHost:
    deb_repo.add(demo_deb(), kernel_deb("1.0", OLD_KERNEL),
                 kernel_deb("1.1", NEW_KERNEL, broken=broken))  # fmt: skip
    apt_host.sandbox.run(["apt-get", "update", "-q"])
    apt_host.sandbox.run(["apt-get", "install", "-y", "-q", "fp-demo=1.0", "linux-image-fp=1.0"])
    return RebootHost(apt_host, reboot_timeout)


def _order(host: RebootHost, **kwargs):
    return host.host.order((("linux-image-fp", ""),), reboot=IF_REQUIRED, **kwargs)


def _restart(host: RebootHost, env=None):
    """The agent starting at boot: it resumes what was in flight."""
    return host.host.sandbox.run([AGENT, "run", "--once", "--state-dir", STATE], env=env,
                                 check=False, timeout=120)  # fmt: skip


def _finals(controller, order_id: str) -> list[tuple[str]]:
    db = sqlite3.connect(controller.data_dir / "controller.db")
    rows = db.execute(
        "SELECT outcome FROM progress_reports WHERE order_id = ? AND final = 1", (order_id,)
    ).fetchall()
    db.close()
    return rows


def test_a_kernel_update_reboots_and_the_agent_resumes_verified(apt_host, deb_repo, controller):
    host = _prepare(apt_host, deb_repo)
    first_boot = host.boot_id
    order = _order(host)

    done = apt_host.apply(order)
    assert done.returncode not in (0, 1), done.stderr  # ended by the "shutdown"
    assert "work order finished" not in done.stdout
    host.wait_booted(1)
    assert host.journal_steps(order.order_id)[-1] == "REBOOT"
    assert host.reboots()[0] == f"asked {first_boot} --now"
    assert (host.kernel, host.boot_id != first_boot) == (NEW_KERNEL, True)

    restarted = _restart(host)
    assert restarted.returncode == 0, restarted.stderr
    assert host.journal_steps(order.order_id) == [
        "RECEIVED", "PRECHECK", "SNAPSHOT", "APPLY", "REBOOT", "REBOOTED", "VERIFY", "SUCCEEDED",
    ]  # fmt: skip
    assert len(host.reboots()) == 2  # asked once, booted once
    assert dpkg_status("linux-image-fp", apt_host.sandbox) == ("ii", "1.1")
    assert _finals(controller, order.order_id) == [("SUCCEEDED",)]


def test_a_regression_on_the_new_kernel_reverts_and_reboots_back(apt_host, deb_repo, controller):
    host = _prepare(apt_host, deb_repo, broken=True)
    host.use_grub()
    order = _order(host)
    apt_host.apply(order)
    host.wait_booted(1)
    _restart(host)  # REBOOTED, VERIFY fails, REVERT sets GRUB's default, reboots
    host.wait_booted(2)
    assert host.kernel == OLD_KERNEL
    assert host.grubenv() == "saved_entry=gnulinux-advanced-fp>gnulinux-6.1.0-13-fp-advanced-fp"
    restarted = _restart(host)
    assert restarted.returncode == 0, restarted.stderr
    steps = host.journal_steps(order.order_id)
    assert steps[4:] == [
        "REBOOT", "REBOOTED", "VERIFY", "REVERT", "REBOOT", "REBOOTED", "REVERT", "REVERTED",
    ]  # fmt: skip
    assert dpkg_status("linux-image-fp", apt_host.sandbox) == ("ii", "1.0")
    record = next(o for o in apt_host.status()["orders"] if o["order_id"] == order.order_id)
    assert f"broken on kernel {NEW_KERNEL}" in record["detail"]
    assert "after revert the host is healthy" in record["detail"]
    assert _finals(controller, order.order_id) == [("REVERTED",)]


def test_without_a_boot_loader_to_steer_the_kernel_revert_says_it_failed(apt_host, deb_repo):
    host = _prepare(apt_host, deb_repo, broken=True)
    order = _order(host)
    apt_host.apply(order)
    host.wait_booted(1)
    _restart(host)
    record = next(o for o in apt_host.status()["orders"] if o["order_id"] == order.order_id)
    assert record["state"] == "REVERT_FAILED"
    assert "neither grubby nor /boot/grub/grub.cfg" in record["detail"]
    assert dpkg_status("linux-image-fp", apt_host.sandbox) == ("ii", "1.0")  # packages went back
    assert len(host.reboots()) == 2  # and no reboot pretending to go back


def test_a_reboot_that_never_happens_is_reported_and_reverted(apt_host, deb_repo, controller):
    host = _prepare(apt_host, deb_repo, reboot_timeout="2s")
    script = apt_host.sandbox.path("/usr/local/sbin/fp-reboot")
    script.write_text('#!/bin/sh\necho "asked $*" >> /var/lib/fp-test/reboots.log\nexit 0\n')
    order = _order(host)
    done = apt_host.apply(order)
    assert "work order finished: REVERTED" in done.stdout, done.stderr
    record = next(o for o in apt_host.status()["orders"] if o["order_id"] == order.order_id)
    revert = next(s for s in record["steps"] if s["state"] == "REVERT")
    assert "did not happen within 2s" in revert["detail"]
    assert dpkg_status("linux-image-fp", apt_host.sandbox) == ("ii", "1.0")
    assert _finals(controller, order.order_id) == [("REVERTED",)]


def test_reboot_never_leaves_the_host_pending_and_says_so(apt_host, deb_repo, controller):
    host = _prepare(apt_host, deb_repo)
    order = host.host.order((("linux-image-fp", ""),), reboot=types_pb2.REBOOT_POLICY_NEVER)
    done = apt_host.apply(order)
    assert "work order finished: PENDING_REBOOT" in done.stdout, done.stderr
    assert host.reboots() == []
    record = next(o for o in apt_host.status()["orders"] if o["order_id"] == order.order_id)
    assert f"kernel {NEW_KERNEL} is installed, {OLD_KERNEL} is running" in record["detail"]
    assert "reboot=never" in record["detail"]
    assert _finals(controller, order.order_id) == [("PENDING_REBOOT",)]


@pytest.mark.parametrize("fault", ["enter:REBOOT", "enter:REBOOTED", "done:REBOOTED"])
def test_killed_around_the_reboot_the_agent_ends_consistent(apt_host, deb_repo, controller, fault):
    host = _prepare(apt_host, deb_repo)
    order = _order(host)
    env = {"FLEETPATCH_FAULT": fault}
    killed = apt_host.apply(order, env=env if fault == "enter:REBOOT" else None)
    assert killed.returncode not in (0, 1)
    if fault == "enter:REBOOT":
        # Killed after journaling the intent, before asking: the restart asks.
        assert host.reboots() == []
        _restart(host)
    host.wait_booted(1)
    if fault != "enter:REBOOT":
        crashed = _restart(host, env=env)  # killed again, right after booting
        assert crashed.returncode not in (0, 1)
    final = _restart(host)
    assert final.returncode == 0, final.stderr
    steps = host.journal_steps(order.order_id)
    assert steps[-3:] == ["REBOOTED", "VERIFY", "SUCCEEDED"], steps
    assert sum(line.startswith("asked") for line in host.reboots()) == 1
    assert dpkg_status("linux-image-fp", apt_host.sandbox) == ("ii", "1.1")
    assert apt_host.status()["reports_queued"] == 0
    assert _finals(controller, order.order_id) == [("SUCCEEDED",)]
