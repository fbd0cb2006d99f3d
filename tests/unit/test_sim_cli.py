"""`fleetpatch-sim` as a person runs it: the console script of the venv."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.support.controller import cli

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "examples" / "scenarios"


def test_run_prints_the_table_and_writes_the_report(tmp_path):
    report = tmp_path / "out.html"
    result = cli("fleetpatch-sim", "run", SCENARIOS / "canary-regression.toml", "--hosts", "500",
                 "--report", report, "--check")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "fleet 500 hosts" in result.stdout
    assert "HALTED" in result.stdout
    assert report.read_text().startswith("<!DOCTYPE html>")


def test_run_json_and_seed():
    out = [
        cli("fleetpatch-sim", "run", SCENARIOS / "region-partition.toml", "--json", "--seed", seed)
        for seed in ("3", "3", "4")
    ]
    docs = [json.loads(r.stdout) for r in out]
    assert docs[0] == docs[1]
    assert docs[0]["seed"] == 3
    assert docs[2]["seed"] == 4
    assert docs[0]["outcome"]["state"] == "completed"


def test_check_fails_when_the_expected_outcome_is_not_met(tmp_path):
    scenario = tmp_path / "s.toml"
    text = (SCENARIOS / "canary-regression.toml").read_text()
    scenario.write_text(
        text.replace(
            '"../campaigns/openssl.toml"', f'"{ROOT / "examples/campaigns/openssl.toml"}"'
        ).replace('state = "halted"', 'state = "completed"')
    )
    result = cli("fleetpatch-sim", "run", scenario, "--check", "--quiet")
    assert result.returncode == 1
    assert "NOT MET  state: expected completed, got halted" in result.stdout


def test_bad_input_is_one_line_and_exit_two(tmp_path):
    shutil.copy(SCENARIOS / "region-partition.toml", tmp_path / "s.toml")
    (tmp_path / "campaigns").mkdir()
    shutil.copy(SCENARIOS / "campaigns" / "partition.toml", tmp_path / "campaigns")
    bad = tmp_path / "s.toml"
    bad.write_text(bad.read_text().replace("hosts = 1200", "hosts = 1200\nhots = 3"))
    for args in (
        ("run", bad),
        ("run", tmp_path / "missing.toml"),
        ("rehearse", tmp_path / "campaigns" / "partition.toml", "--data-dir", tmp_path / "no"),
        ("rehearse", tmp_path / "s.toml", "--data-dir", tmp_path),
    ):
        result = cli("fleetpatch-sim", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("fleetpatch-sim: error: "), lines
    assert "fleet.hots" in cli("fleetpatch-sim", "run", bad).stderr


def test_help_describes_both_commands():
    result = cli("fleetpatch-sim", "--help")
    assert result.returncode == 0
    assert "run" in result.stdout
    assert "rehearse" in result.stdout
    rehearse = cli("fleetpatch-sim", "rehearse", "--help").stdout
    for option in ("--data-dir", "--controller", "--failure-model", "--seed", "--json",
                   "--report"):  # fmt: skip
        assert option in rehearse


NOT_UTF8 = [b"\xff\xfe\x00\x01garbage\x80\x81", "name = 'x'\n".encode("utf-16")]


def test_files_that_are_not_utf8_are_one_line_and_exit_two(tmp_path):
    """As `fleetpatch campaign create` does: never a UnicodeDecodeError."""
    for index, data in enumerate(NOT_UTF8):
        bad = tmp_path / f"bad{index}.toml"
        bad.write_bytes(data)
        for args in (("run", bad), ("rehearse", bad, "--data-dir", tmp_path / "no")):
            result = cli("fleetpatch-sim", *args)
            assert result.returncode == 2, (args, result.stderr)
            assert result.stderr.strip() == (
                f"fleetpatch-sim: error: {bad}: cannot read it: not a text file (UTF-8)"
            )


def test_a_failure_model_or_a_scenario_s_campaign_that_is_not_utf8_is_a_scenario_error(tmp_path):
    from simulator.cli import _failure_model
    from simulator.errors import ScenarioError
    from simulator.scenario import load_scenario

    bad = tmp_path / "bad.toml"
    bad.write_bytes(NOT_UTF8[0])
    with pytest.raises(ScenarioError, match="not a text file"):
        _failure_model(bad)
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        (SCENARIOS / "region-partition.toml")
        .read_text()
        .replace('"campaigns/partition.toml"', '"bad.toml"')
    )
    assert '"bad.toml"' in scenario.read_text()
    with pytest.raises(ScenarioError) as caught:
        load_scenario(scenario)
    assert str(caught.value).endswith(
        f"scenario.campaign: cannot read {bad}: not a text file (UTF-8)"
    )


def test_start_times_outside_the_supported_years_are_refused(tmp_path):
    scenario = tmp_path / "s.toml"
    text = (SCENARIOS / "region-partition.toml").read_text()
    campaign = str(SCENARIOS / "campaigns" / "partition.toml")
    text = text.replace('"campaigns/partition.toml"', f'"{campaign}"')
    scenario.write_text(re.sub(r"start = .*", 'start = "9999-12-31T23:59:59-23:59"', text, count=1))
    result = cli("fleetpatch-sim", "run", scenario)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().endswith(
        "scenario.start: 9999-12-31T23:59:59-23:59 is out of range (years 1970 to 9000)"
    )
    result = cli("fleetpatch-sim", "rehearse", campaign, "--start", "0001-01-01T00:00:00+01:00",
                 "--data-dir", tmp_path / "no")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "fleetpatch-sim: error: --start: 0001-01-01T00:00:00+01:00 is out of range "
        "(years 1970 to 9000)"
    )
