"""SIGKILL the agent at every step of a work order on a real (sandboxed)
host, restart it, and check the end is consistent: SUCCEEDED with the new
version or REVERTED with the old, the journal agreeing with dpkg, dpkg
healthy, and the controller told the outcome exactly once.

The kill comes from the agent's fault seam (FLEETPATCH_FAULT): `enter:S`
right after state S is journaled, before its side effect; `done:S` right
after the side effect, before the next state is journaled.
"""

from __future__ import annotations

import sqlite3

import pytest

from tests.support.apthost import AGENT, STATE, AptHost, demo
from tests.support.debrepo import dpkg_status

pytestmark = pytest.mark.root

GOOD = [
    f"{point}:{state}"
    for state in ("RECEIVED", "PRECHECK", "SNAPSHOT", "APPLY", "RESTART", "VERIFY")
    for point in ("enter", "done")
] + ["enter:SUCCEEDED"]
BROKEN = ["enter:REVERT", "done:REVERT", "enter:REVERTED"]


@pytest.mark.parametrize(
    ("fault", "healthy", "final", "version"),
    [(f, True, "SUCCEEDED", "1.1") for f in GOOD] + [(f, False, "REVERTED", "1.0") for f in BROKEN],
)
def test_killed_agent_ends_consistent(
    apt_host: AptHost, deb_repo, controller, fault, healthy, final, version
):
    deb_repo.add(demo("1.0"), demo("1.1", healthy=healthy))
    apt_host.sandbox.run(["apt-get", "update", "-q"])
    apt_host.sandbox.run(["apt-get", "install", "-y", "-q", "fp-demo=1.0"])
    order = apt_host.order()

    killed = apt_host.apply(order, env={"FLEETPATCH_FAULT": fault})
    assert killed.returncode not in (0, 1), (killed.returncode, killed.stdout, killed.stderr)
    assert "work order finished" not in killed.stdout
    crashed_in = next(o for o in apt_host.status()["orders"] if o["order_id"] == order.order_id)
    assert crashed_in["state"] == fault.split(":")[1] or fault.startswith("done:")

    # Restart: the agent resumes the order before anything else.
    apt_host.sandbox.run([AGENT, "run", "--once", "--state-dir", STATE])

    status = apt_host.status()
    record = next(o for o in status["orders"] if o["order_id"] == order.order_id)
    assert record["state"] == final, record["steps"]
    assert dpkg_status("fp-demo", apt_host.sandbox) == ("ii", version)
    assert apt_host.sandbox.run(["dpkg", "--audit"]).stdout.strip() == ""
    assert status["reports_queued"] == 0

    db = sqlite3.connect(controller.data_dir / "controller.db")
    finals = db.execute(
        "SELECT outcome FROM progress_reports WHERE order_id = ? AND final = 1", (order.order_id,)
    ).fetchall()
    db.close()
    assert finals == [(final,)]
