"""A new user's first campaign against a real controller (issue 18 item 7):
`campaign create` warns about what cannot be meant (a deadline or blackout
dates in the past, targets that match no enrolled host), `campaign
rehearse` refuses to report coverage of nothing, and the shipped first
campaign targets the hosts the README walk-through enrolls."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.controller import Controller, cli
from tests.support.fakes import FakeBackend, FakeProber
from tests.support.inprocess import InProcessAgent

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "campaigns"


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[Controller]:
    controller = Controller(tmp_path / "ctl")
    controller.init()
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def _warnings(stderr: str, program: str = "fleetpatch") -> list[str]:
    prefix = f"{program}: warning: "
    return [line.removeprefix(prefix) for line in stderr.splitlines() if line.startswith(prefix)]


def test_create_warns_of_the_past_and_of_targets_matching_nobody(ctl):
    done = cli("fleetpatch", "campaign", "create", EXAMPLES / "openssl.toml",
               "--data-dir", ctl.data_dir)  # fmt: skip
    assert done.returncode == 0, done.stderr  # stored all the same: a warning, not an error
    warned = _warnings(done.stderr)
    assert [w.split(":")[0] for w in warned] == [
        "the deadline 2025-02-15T00",
        "2 blackout date(s) in the past, which block nothing",
        "its targets match no enrolled host",
    ]
    assert done.stdout.strip()  # the id, last, as before

    rehearsed = cli("fleetpatch", "campaign", "rehearse", EXAMPLES / "openssl.toml",
                    "--data-dir", ctl.data_dir)  # fmt: skip
    assert rehearsed.returncode == 2
    assert "100" not in rehearsed.stdout
    assert rehearsed.stderr.strip().splitlines()[-1] == (
        f"fleetpatch-sim: error: nothing to rehearse: {EXAMPLES / 'openssl.toml'} targets none "
        "of the 0 enrolled host(s)"
    )


def test_the_first_campaign_targets_the_readme_hosts_without_a_warning(ctl, tmp_path):
    # The README walk-through: `token create --region eu-west --ring 1`.
    agent = InProcessAgent(ctl, tmp_path / "agent", "eu-west", 1,
                           FakeBackend({"libc6": "2.36"}, {}), FakeProber([True]))  # fmt: skip
    try:
        agent.round()
        done = cli("fleetpatch", "campaign", "create", EXAMPLES / "first.toml",
                   "--data-dir", ctl.data_dir)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert _warnings(done.stderr) == []
        assert "(1 host(s) targeted now)" in done.stderr
        rehearsed = cli("fleetpatch", "campaign", "rehearse", EXAMPLES / "first.toml",
                        "--data-dir", ctl.data_dir, "--json")  # fmt: skip
        assert rehearsed.returncode == 0, rehearsed.stderr
        assert _warnings(rehearsed.stderr, "fleetpatch-sim") == []
    finally:
        agent.close()
