"""A rehearsal and a real run of the same campaign on the same fleet agree.

The fleet is a real controller with agents in-process over real mTLS (real
enrollment, journal, runner, check-ins and reports; only the package manager
and the health checks are stand-ins). First `fleetpatch-sim rehearse` reads
that controller's inventory and rehearses the campaign file, as
`fleetpatch campaign rehearse` will; then the same file is created,
approved and run for real. Both must finish the same rings and halt (or
complete) the same way, in the same ring.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.orders.states import State
from tests.support.controller import Controller, cli
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.inprocess import InProcessAgent, tokens_for

# Ring 1 takes all its hosts at once, so which rings finish does not hang on
# the order in which hosts happen to check in (a real one and a simulated one
# need not agree on that).
CAMPAIGN = """
[campaign]
name = "agree-1"

[patch]
packages = [{ name = "fp-demo", min_version = "1.1" }]

[verify]
timeout = "1s"

[rollout]
region_order = "parallel"
rings = [
  { ring = 0, concurrency = "100%", gate = { min_success = 1.0, failure_budget = 0 } },
  { ring = 1, concurrency = "100%", gate = { min_success = 0.5, failure_budget = 0 } },
  { ring = 2, concurrency = "50%" },
]
"""

LAYOUT = [  # (region, ring)
    ("eu", 0), ("us", 0),
    ("eu", 1), ("eu", 1), ("us", 1), ("us", 1),
    ("eu", 2), ("eu", 2), ("eu", 2), ("us", 2), ("us", 2), ("us", 2),
]  # fmt: skip
BROKEN = 3  # a ring 1 host whose health regresses after the update


@pytest.fixture
def fleet(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Controller, list[InProcessAgent]]]:
    """The fleet; with ``broken`` (the test's parameter) host BROKEN's health
    regresses after the update."""
    broken = request.param
    ctl = Controller(tmp_path / "ctl")
    ctl.init()
    config = ctl.data_dir / "controller.toml"
    config.write_text(config.read_text().replace('tick = "10s"', 'tick = "1s"'))
    ctl.start()
    agents = []
    try:
        tokens = tokens_for(ctl, LAYOUT)
        for i, (region, ring) in enumerate(LAYOUT):
            backend = FakeBackend({"fp-demo": "1.0"}, {"fp-demo": "1.1"})
            # healthy before the update; the broken one not after it
            prober = FakeProber([True, False] if broken and i == BROKEN else [True])
            agents.append(
                InProcessAgent(ctl, tmp_path / f"agent-{i}", region, ring, backend, prober,
                               defer=True, token=tokens[region, ring])
            )  # fmt: skip
        for agent in agents:
            agent.round()  # seen by the controller: online for the rehearsal
        yield ctl, agents
    finally:
        for agent in agents:
            agent.close()
        ctl.stop()


def _rehearse(ctl: Controller, campaign: Path, failures: Path) -> dict:  # type: ignore[type-arg]
    result = cli(
        "fleetpatch-sim", "rehearse", campaign, "--data-dir", ctl.data_dir,
        "--failure-model", failures, "--json", "--quiet", "--duration", "1d",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


def _real(ctl: Controller, agents: list[InProcessAgent], campaign: Path) -> dict[str, object]:
    campaign_id = ctl.admin("campaign", "create", campaign).stdout.strip().splitlines()[-1]
    ctl.admin("campaign", "approve", campaign_id)
    shown: dict[str, object] = {}
    for _ in range(12):
        for agent in agents:
            agent.round()
        doc = ctl.admin_json("campaign", "show", campaign_id)
        assert isinstance(doc, dict)
        shown = doc
        if shown["state"] == "completed" or (
            shown["state"] == "halted" and all(not a._pending for a in agents)
        ):
            break
    return shown


def _rings(agents: list[InProcessAgent]) -> tuple[list[int], list[int]]:
    """Rings where every host finished, and rings no host was assigned in."""
    rings = sorted({a.ring for a in agents})
    finished = [r for r in rings if all(a.outcomes for a in agents if a.ring == r)]
    untouched = [r for r in rings if not any(a.outcomes for a in agents if a.ring == r)]
    return finished, untouched


@pytest.mark.parametrize(
    ("fleet", "broken"), [(True, True), (False, False)], ids=["regression", "clean"],
    indirect=["fleet"],
)  # fmt: skip
def test_rehearsal_and_real_run_agree(fleet, tmp_path, broken):
    ctl, agents = fleet
    campaign = tmp_path / "agree.toml"
    campaign.write_text(CAMPAIGN)
    failures = tmp_path / "failures.toml"
    failures.write_text("[failures]\n")
    if broken:
        host = agents[BROKEN].host_id
        failures.write_text(f'[[failures.rules]]\nhosts = ["{host}"]\nregress = 1.0\n')

    rehearsal = _rehearse(ctl, campaign, failures)
    assert rehearsal["fleet"] == {"hosts": len(agents), "targeted": len(agents)}

    real = _real(ctl, agents, campaign)
    finished, untouched = _rings(agents)

    assert rehearsal["outcome"]["state"] == real["state"]
    assert rehearsal["outcome"]["rings_finished"] == finished
    assert rehearsal["outcome"]["rings_untouched"] == untouched
    if broken:
        assert real["state"] == "halted"
        halt = rehearsal["halts"][0]
        assert halt["kind"] == real["halt_kind"] == "failure_budget"
        assert str(real["halt_reason"]).startswith(f"ring {halt['ring']}:")
        assert halt["ring"] == 1
        assert finished == [0, 1]
        assert untouched == [2]
        assert agents[BROKEN].outcomes == [State.REVERTED]
        assert rehearsal["total"]["reverted"] == 1
    else:
        assert real["state"] == "completed"
        assert finished == [0, 1, 2]
        assert untouched == []
        assert rehearsal["total"]["succeeded"] == len(agents)

    # Afterwards, a rehearsal with no failure model given calibrates from
    # what this campaign did, and says so.
    again = cli(
        "fleetpatch-sim", "rehearse", campaign, "--data-dir", ctl.data_dir, "--json",
        "--quiet", "--duration", "1d",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    orders = sum(1 for a in agents if a.outcomes)
    assert (
        f"calibrated from the fleet's history: {orders} finished patch order(s) on {orders} host(s)"
        in again.stderr
    )
    reverted = "reverted 0.0%" if not broken else f"reverted {1 / orders:.1%}"
    assert f"fleet-wide: failed 0.0%, {reverted}" in again.stderr
    assert "apply" in again.stderr
    assert json.loads(again.stdout)["fleet"]["hosts"] == len(agents)
