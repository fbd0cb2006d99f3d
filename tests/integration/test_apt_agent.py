"""The agent against real apt and dpkg, in a throwaway copy of this host.

Each test gets a HostSandbox (mount namespace, overlay of /, chroot), a
local apt repository built with dpkg-deb and dpkg-scanpackages, a real
controller on loopback, and the real `fleetpatch-agent` enrolled inside the
sandbox. Work orders are signed with the controller's own signing key. The
machine running the tests is never modified.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from typing import Any

import pytest
from fleetpatch import jsonschema

from agent import schemas as agent_schemas
from tests.support.apthost import AGENT, STATE, AptHost, demo
from tests.support.debrepo import DebSpec, LocalAptRepo, add_repo, dpkg_status
from tests.support.orders import sign, work_order
from tests.support.sandbox import HostSandbox

pytestmark = pytest.mark.root


def _final(host: AptHost, order_id: str) -> dict[str, Any]:
    return next(o for o in host.status()["orders"] if o["order_id"] == order_id)


def test_upgrade_succeeds_and_the_machine_is_untouched(apt_host, deb_repo):
    deb_repo.add(demo("1.0"), demo("1.1"))
    apt_host.sandbox.run(["apt-get", "update", "-q"])
    apt_host.sandbox.run(["apt-get", "install", "-y", "-q", "fp-demo=1.0"])

    order = apt_host.order()
    done = apt_host.apply(order)
    assert done.returncode == 0, done.stderr
    assert "work order finished: SUCCEEDED" in done.stdout
    assert apt_host.installed() == ("ii", "1.1")
    assert dpkg_status("fp-demo") is None  # the real machine never saw it

    final = _final(apt_host, order.order_id)
    assert final["state"] == "SUCCEEDED"
    assert [s["state"] for s in final["steps"]] == [
        "RECEIVED", "PRECHECK", "SNAPSHOT", "APPLY", "RESTART", "VERIFY", "SUCCEEDED",
    ]  # fmt: skip
    assert final["changes"] == [
        {"name": "fp-demo", "arch": None, "old": "1.0", "new": "1.1", "origin": None}
    ]
    # The version it replaced is kept, so a revert would need no repository.
    kept = list(apt_host.sandbox.path(f"{STATE}/cache/{order.order_id}").glob("fp-demo_1.0_*.deb"))
    assert kept


def test_a_broken_update_is_reverted_with_no_repository_holding_the_old_version(
    apt_host, deb_repo, tmp_path
):
    apt_host.install_from_file(demo("1.0"), tmp_path)  # 1.0 exists nowhere but on the host
    deb_repo.add(demo("1.1", healthy=False))
    order = apt_host.order()
    done = apt_host.apply(order)
    assert done.returncode == 1, done.stderr
    assert "work order finished: REVERTED" in done.stdout
    assert apt_host.installed() == ("ii", "1.0")
    final = _final(apt_host, order.order_id)
    assert [s["state"] for s in final["steps"]][-3:] == ["VERIFY", "REVERT", "REVERTED"]
    revert = next(s for s in final["steps"] if s["state"] == "REVERT")
    assert "fp-demo: config broken" in revert["detail"] or "fp-demo exited 1" in revert["detail"]
    assert "after revert the host is healthy" in final["detail"]
    assert apt_host.sandbox.run(["/usr/bin/fp-demo", "--check"], check=False).returncode == 0


def test_no_revertable_copy_means_no_patch(apt_host, deb_repo, tmp_path):
    apt_host.install_from_file(demo("1.0"), tmp_path)
    deb_repo.add(demo("1.1"))
    # No way to build a package here (only inside the sandbox): neither the
    # agent's own repack nor dpkg-repack can work without dpkg-deb.
    apt_host.sandbox.run(["rm", "/usr/bin/dpkg-repack", "/usr/bin/dpkg-deb"])
    order = apt_host.order()
    done = apt_host.apply(order)
    assert "work order finished: FAILED" in done.stdout
    assert "cannot keep a copy of fp-demo 1.0" in _final(apt_host, order.order_id)["detail"]
    assert apt_host.installed() == ("ii", "1.0")


def test_a_failing_postinst_is_reverted(apt_host, deb_repo):
    deb_repo.add(demo("1.0"), demo("1.1", postinst_fails=True))
    apt_host.sandbox.run(["apt-get", "update", "-q"])
    apt_host.sandbox.run(["apt-get", "install", "-y", "-q", "fp-demo=1.0"])
    order = apt_host.order()
    done = apt_host.apply(order)
    assert "work order finished: REVERTED" in done.stdout, done.stderr
    assert apt_host.installed() == ("ii", "1.0")
    assert apt_host.sandbox.run(["dpkg", "--audit"]).stdout.strip() == ""


def test_a_held_dpkg_lock_is_waited_for_then_the_update_runs(apt_host, deb_repo):
    deb_repo.add(demo("1.0"), demo("1.1"))
    apt_host.sandbox.run(["apt-get", "update", "-q"])
    apt_host.sandbox.run(["apt-get", "install", "-y", "-q", "fp-demo=1.0"])
    holder = _hold_dpkg_lock(apt_host.sandbox, seconds=4)
    try:
        done = apt_host.apply(apt_host.order())
    finally:
        holder.wait(timeout=30)
    assert done.returncode == 0, done.stderr
    assert re.search(r"locked by another process.*retrying", done.stderr)
    assert apt_host.installed() == ("ii", "1.1")
    assert apt_host.sandbox.run(["dpkg", "--audit"]).stdout.strip() == ""


def test_a_dpkg_lock_held_too_long_fails_and_changes_nothing(apt_host, deb_repo):
    deb_repo.add(demo("1.0"), demo("1.1"))
    apt_host.sandbox.run(["apt-get", "update", "-q"])
    apt_host.sandbox.run(["apt-get", "install", "-y", "-q", "fp-demo=1.0"])
    holder = _hold_dpkg_lock(apt_host.sandbox, seconds=25)
    try:
        order = apt_host.order()
        done = apt_host.apply(order)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert done.returncode == 1
    assert "work order finished: FAILED" in done.stdout
    assert "locked by another process" in _final(apt_host, order.order_id)["detail"]
    assert apt_host.installed() == ("ii", "1.0")


def _hold_dpkg_lock(sandbox: HostSandbox, seconds: int):
    """Another process takes dpkg's frontend lock (as apt does) for a while."""
    code = (
        "import fcntl, sys, time\n"
        "f = open('/var/lib/dpkg/lock-frontend', 'w')\n"
        "fcntl.lockf(f, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        f"time.sleep({seconds})\n"
    )
    proc = sandbox.spawn(["python3", "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"locked"
    return proc


def test_refused_orders_change_nothing_on_a_real_host(apt_host, deb_repo):
    deb_repo.add(demo("1.0"), demo("1.1"))
    apt_host.sandbox.run(["apt-get", "update", "-q"])
    apt_host.sandbox.run(["apt-get", "install", "-y", "-q", "fp-demo=1.0"])
    before = set(apt_host.sandbox.upper_changes())

    tampered = apt_host.order()
    envelope = sign(tampered, apt_host.key)
    envelope.payload = envelope.payload.replace(b"fp-demo", b"fp-dem0")
    apt_host.sandbox.path("/root/tampered.order").write_bytes(envelope.SerializeToString())
    done = apt_host.sandbox.run(
        [AGENT, "apply", "/root/tampered.order", "--state-dir", STATE], check=False
    )
    assert done.returncode == 4
    assert "refused" in done.stderr

    other = work_order("h-0000000000000000", 99, (("fp-demo", ""),))
    assert apt_host.apply(other).returncode == 4

    assert apt_host.installed() == ("ii", "1.0")
    changed = set(apt_host.sandbox.upper_changes()) - before
    assert all(path.startswith(STATE) or path.startswith("/root/") for path in changed), changed
    refusals = apt_host.status()["refusals"]
    assert [r["reason"] for r in refusals] == ["wrong-host", "bad-signature"]


def test_progress_reaches_the_controller_once(apt_host, deb_repo, controller):
    deb_repo.add(demo("1.0"), demo("1.1"))
    apt_host.sandbox.run(["apt-get", "update", "-q"])
    apt_host.sandbox.run(["apt-get", "install", "-y", "-q", "fp-demo=1.0"])
    order = apt_host.order()
    assert apt_host.apply(order).returncode == 0
    # A later run sends nothing again: every report was acknowledged.
    apt_host.sandbox.run([AGENT, "run", "--once", "--state-dir", STATE])
    assert apt_host.status()["reports_queued"] == 0
    db = sqlite3.connect(controller.data_dir / "controller.db")
    rows = db.execute(
        "SELECT step, final FROM progress_reports WHERE order_id = ? ORDER BY at, rowid",
        (order.order_id,),
    ).fetchall()
    db.close()
    assert [r[0] for r in rows] == [
        "RECEIVED",
        "PRECHECK",
        "SNAPSHOT",
        "APPLY",
        "RESTART",
        "VERIFY",
        "SUCCEEDED",
    ]
    assert sum(r[1] for r in rows) == 1


def test_all_security_updates_takes_a_fix_whose_candidate_comes_from_another_suite(
    apt_host, deb_repo, tmp_path
):
    """fp-demo 1.0 installed; 1.1 in a security archive, 1.2 (which has the
    fix too) in the main one: the host is exposed, and the plan takes apt's
    candidate 1.2. fp-other has a newer version only in the main archive:
    not a security update, left alone."""
    security = LocalAptRepo(
        tmp_path / "security", {"Suite": "bookworm-security", "Label": "Debian-Security"}
    )
    security.add(demo("1.1"))
    other = DebSpec("fp-other", "1.0")
    deb_repo.add(demo("1.0"), demo("1.2"), other, DebSpec("fp-other", "1.5"))
    add_repo(apt_host.sandbox, security, "/srv/fp-security")
    apt_host.sandbox.run(["apt-get", "update", "-q"])
    apt_host.sandbox.run(["apt-get", "install", "-y", "-q", "fp-demo=1.0", "fp-other=1.0"])

    order = apt_host.order(packages=())
    order.patch.all_security_updates = True
    done = apt_host.apply(order)
    assert done.returncode == 0, done.stderr
    final = _final(apt_host, order.order_id)
    assert final["state"] == "SUCCEEDED"
    assert [(c["name"], c["old"], c["new"]) for c in final["changes"]] == [
        ("fp-demo", "1.0", "1.2")
    ]
    assert apt_host.installed() == ("ii", "1.2")
    assert dpkg_status("fp-other", apt_host.sandbox) == ("ii", "1.0")


def test_a_scan_reports_the_updates_available_and_which_fix_security_problems(
    apt_host, deb_repo, tmp_path
):
    """A normal and a security suite: fp-demo's fix is in the security one
    (its candidate, 1.2, in the main one), fp-other has a plain update. The
    scan installs nothing; the next check-in takes the list to the
    controller, whose `hosts show` has it."""
    security = LocalAptRepo(
        tmp_path / "security", {"Suite": "bookworm-security", "Label": "Debian-Security"}
    )
    security.add(demo("1.1"))
    deb_repo.add(demo("1.0"), demo("1.2"), DebSpec("fp-other", "1.0"), DebSpec("fp-other", "1.5"))
    add_repo(apt_host.sandbox, security, "/srv/fp-security")
    apt_host.sandbox.run(["apt-get", "update", "-q"])
    apt_host.sandbox.run(["apt-get", "install", "-y", "-q", "fp-demo=1.0", "fp-other=1.0"])

    done = apt_host.sandbox.run([AGENT, "scan", "--json", "--state-dir", STATE], check=False)
    assert done.returncode == 0, done.stderr
    scanned = json.loads(done.stdout)
    assert jsonschema.check(scanned, jsonschema.array(agent_schemas.AVAILABLE)) == []
    found = {u["name"]: u for u in scanned}
    assert {n: (u["installed"], u["candidate"], u["security"], u["reboot"])
            for n, u in found.items() if n.startswith("fp-")} == {
        "fp-demo": ("1.0", "1.2", True, False),
        "fp-other": ("1.0", "1.5", False, False),
    }  # fmt: skip
    assert apt_host.installed() == ("ii", "1.0")  # the scan changed nothing
    assert dpkg_status("fp-other", apt_host.sandbox) == ("ii", "1.0")

    checked = apt_host.sandbox.run([AGENT, "run", "--once", "--state-dir", STATE], check=False)
    assert checked.returncode == 0, checked.stderr
    host = apt_host.controller.admin_json("hosts", "show", apt_host.host_id)
    assert isinstance(host, dict)
    reported = {u["name"]: u for u in host["updates"]["available"]}
    assert reported["fp-demo"]["security"] is True
    assert reported["fp-demo"]["candidate"] == "1.2"
    assert reported["fp-other"]["security"] is False
    shown = apt_host.controller.admin("hosts", "show", apt_host.host_id).stdout
    assert "with a security fix" in shown
