"""The audit trail against a real controller process: refusals counted
rather than flooding it, signed checkpoints that catch a cut-off tail or a
rewritten chain, an export that streams.

A real controller (real mutual TLS on loopback, a real SQLite file), the
real admin CLI, and hosts enrolled with the real agent CLI.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from fleetpatch.envelope import key_id, raw_public_key
from fleetpatch.v1 import agent_pb2, types_pb2

from agent.link.client import ControllerClient
from agent.statedir import StateDir
from controller.audit import AuditEntry, record_hash
from controller.checkpoint import Checkpoints
from controller.datadir import DataDir
from controller.fleet.signing import load_signing_keys
from tests.conftest import STORES
from tests.support.controller import Controller, Result, cli

pytestmark = pytest.mark.parametrize("store_url", STORES, indirect=True)


def _enroll(ctl: Controller, state: Path) -> str:
    result = ctl.enroll(state, ctl.token())
    assert result.returncode == 0, result.stderr
    return StateDir(state).host_id()


def _client(ctl: Controller, state: Path) -> ControllerClient:
    sd = StateDir(state)
    return ControllerClient(ctl.address, sd.read(sd.ca), sd.read(sd.key), sd.read(sd.cert))


def _refuse(client: ControllerClient, prefix: str, count: int) -> None:
    """``count`` refusals, each with its own idempotency key, 100 per call."""
    for start in range(0, count, 100):
        reports = [
            types_pb2.ProgressReport(
                idempotency_key=f"{prefix}-{i}", order_id=f"o-{i}", step="REFUSED", final=True,
                outcome="REFUSED", detail=f"signed by unknown key ({i})", sequence=i + 1,
            )
            for i in range(start, min(start + 100, count))
        ]  # fmt: skip
        client.report_progress(agent_pb2.ReportProgressRequest(reports=reports))


def _refusal_records(ctl: Controller) -> dict[str, list[str]]:
    with ctl.database() as conn:
        rows = conn.execute(
            "SELECT actor, detail FROM audit WHERE action = 'order.refused' ORDER BY seq"
        ).fetchall()
    out: dict[str, list[str]] = {}
    for actor, detail in rows:
        out.setdefault(actor, []).append(detail)
    return out


def _represented(details: list[str]) -> int:
    total = 0
    for detail in details:
        counted = re.match(r"(\d+) more refusal\(s\) since ", detail)
        total += int(counted.group(1)) if counted else 1
    return total


def test_a_refusing_host_writes_a_count_not_a_record_each_and_shutdown_keeps_it(
    controller, tmp_path
):
    flooding = _enroll(controller, tmp_path / "a1")
    quiet = _enroll(controller, tmp_path / "a2")
    first, second = _client(controller, tmp_path / "a1"), _client(controller, tmp_path / "a2")
    _refuse(first, "k", 1000)
    _refuse(second, "q", 3)
    first.close()
    second.close()
    # Only the first refusal of each host is in the trail while it runs ...
    running = _refusal_records(controller)
    assert {a: len(d) for a, d in running.items()} == {f"host:{flooding}": 1, f"host:{quiet}": 1}
    # ... and the counts are written when it stops (SIGTERM, as systemd does).
    assert controller.stop() == 0
    stopped = _refusal_records(controller)
    assert len(stopped[f"host:{flooding}"]) == 2
    assert _represented(stopped[f"host:{flooding}"]) == 1000
    assert stopped[f"host:{flooding}"][1].startswith("999 more refusal(s) since ")
    assert stopped[f"host:{flooding}"][1].endswith("last: signed by unknown key (999)")
    assert _represented(stopped[f"host:{quiet}"]) == 3
    controller.start()
    assert controller.admin("audit", "verify").stdout.startswith("audit trail intact")


# -- signed checkpoints ---------------------------------------------------------


def _records(ctl: Controller, n: int) -> None:
    """Make the trail ``n`` records longer, each an admin action (an
    enrollment token made). A fresh controller's trail starts with one: its
    first owner, recorded by `controller init`; so the first call makes one
    fewer, and the trail then holds ``n``."""
    fresh = not ctl.admin_json("audit", "export")[1:]  # type: ignore[index]
    for _ in range(n - 1 if fresh else n):
        ctl.token()


def _checkpoint(ctl: Controller, path: Path) -> Path:
    result = ctl.admin("audit", "checkpoint")
    path.write_text(result.stdout)
    return path


def _verify(ctl: Controller, *args: str | Path) -> Result:
    return cli("fleetpatch", "audit", "verify", "--data-dir", ctl.data_dir, *args)


def _tamper(ctl: Controller, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Change the database behind the controller's back (stopped meanwhile)."""
    assert ctl.stop() == 0
    with ctl.database() as conn:
        for sql, args in statements:
            conn.execute(sql, args)
    ctl.start()


def _broken(result: Result, *needles: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in line, line


def test_a_checkpoint_is_signed_json_on_stdout(controller, tmp_path):
    _records(controller, 3)
    path = _checkpoint(controller, tmp_path / "cp.json")
    doc = json.loads(path.read_text())
    assert doc["kind"] == "fleetpatch audit checkpoint"
    assert doc["seq"] == 3
    signing = (controller.data_dir / "signing.key").read_bytes()
    key = serialization.load_pem_private_key(signing, None)
    assert doc["key_id"] == key_id(raw_public_key(key.public_key()))  # type: ignore[arg-type]
    result = _verify(controller, "--checkpoint", path)
    assert result.returncode == 0, result.stderr
    assert "intact: 3 record(s); it holds to the checkpoint of record 3" in result.stdout
    _records(controller, 2)  # a trail that grew since still holds to it
    assert _verify(controller, "--checkpoint", path).returncode == 0


def test_a_cut_off_tail_passes_plain_verify_but_not_a_checkpoint(controller, tmp_path):
    _records(controller, 6)
    path = _checkpoint(controller, tmp_path / "cp.json")
    _tamper(controller, ("DELETE FROM audit WHERE seq > ?", (3,)))
    assert _verify(controller).stdout.startswith("audit trail intact: 3 record(s)")
    _broken(_verify(controller, "--checkpoint", path), "ends at record 3", "vouches for 6",
            "cut off")  # fmt: skip


def test_a_rewritten_chain_passes_plain_verify_but_not_a_checkpoint(controller, tmp_path):
    _records(controller, 5)
    path = _checkpoint(controller, tmp_path / "cp.json")
    # Edit record 2 and recompute every hash from it on, as someone with
    # write access to the database (but not the signing key) could.
    with controller.database() as conn:
        rows = conn.execute(
            "SELECT seq, at, actor, action, target, outcome, detail, prev_hash FROM audit"
            " ORDER BY seq"
        ).fetchall()
    edits, prev = [], rows[0][7]
    for seq, at, stored_actor, action, target, outcome, detail, _ in rows:
        actor = "admin:somebody-else" if seq == 2 else stored_actor
        entry = AuditEntry(datetime.fromisoformat(at), actor, action, target, outcome, detail)
        digest = record_hash(seq, entry, prev)
        edits.append(("UPDATE audit SET actor = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                      (actor, prev, digest, seq)))  # fmt: skip
        prev = digest
    _tamper(controller, *edits)
    assert _verify(controller).stdout.startswith("audit trail intact: 5 record(s)")
    _broken(_verify(controller, "--checkpoint", path), "record 5", "rewritten")


def test_a_checkpoint_signed_before_a_key_rotation_still_verifies(controller, tmp_path):
    _records(controller, 2)
    path = _checkpoint(controller, tmp_path / "cp.json")
    before = json.loads(path.read_text())["key_id"]
    assert controller.stop() == 0
    controller.admin("controller", "rotate-key")
    controller.start()
    assert (
        json.loads(_checkpoint(controller, tmp_path / "new.json").read_text())["key_id"] != before
    )
    result = _verify(controller, "--checkpoint", path)
    assert result.returncode == 0, result.stderr


def _one_line_usage(result: Result, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in line, line


def test_a_bad_checkpoint_file_is_one_line_and_exit_2(controller, tmp_path):
    _records(controller, 2)
    good = json.loads(_checkpoint(controller, tmp_path / "cp.json").read_text())
    cases = {
        "missing.json": None,
        "garbage.json": "not json at all",
        "other.json": json.dumps({"kind": "something else"}),
        "lacking.json": json.dumps({"kind": good["kind"], "seq": 1}),
        "unsigned.json": json.dumps({**good, "signature": ""}),
        "altered.json": json.dumps({**good, "seq": good["seq"] - 1}),
        "badsig.json": json.dumps({**good, "signature": "!!!"}),
    }
    expected = {
        "missing.json": "cannot read",
        "garbage.json": "not JSON",
        "other.json": "not a checkpoint",
        "lacking.json": "lacks",
        "unsigned.json": "not signed",
        "altered.json": "does not match",
        "badsig.json": "not base64",
    }
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        _one_line_usage(_verify(controller, "--checkpoint", tmp_path / name), expected[name])


def test_a_checkpoint_of_another_controller_is_refused(controller, tmp_path):
    _records(controller, 2)
    other = Controller(tmp_path / "other")  # only its keys are needed: never started
    other.init()
    keys = load_signing_keys(DataDir(other.data_dir))
    foreign = Checkpoints(keys.key, keys.trusted).sign(2, "0" * 64, datetime.now(UTC))
    path = tmp_path / "foreign.json"
    path.write_text(foreign.to_json())
    _one_line_usage(_verify(controller, "--checkpoint", path), foreign.key_id, "another controller")


def test_the_controller_logs_checkpoints_at_start_and_shutdown(tmp_path, store_url):
    ctl = Controller(tmp_path / "ctl", store_url=store_url)
    ctl.init()
    ctl.start()
    _records(ctl, 4)
    assert ctl.stop() == 0
    lines = [line for line in ctl.log.read_text().splitlines() if "audit checkpoint: " in line]
    assert len(lines) == 2  # at start and at shutdown (the interval is an hour)
    last = tmp_path / "from-the-log.json"
    last.write_text(lines[-1].split("audit checkpoint: ", 1)[1])
    assert json.loads(last.read_text())["seq"] == 4
    ctl.start()
    try:
        result = _verify(ctl, "--checkpoint", last)
        assert result.returncode == 0, result.stderr
    finally:
        ctl.stop()


# -- streaming export -------------------------------------------------------------


def test_an_export_far_past_grpcs_message_limit_streams_in_order(controller, tmp_path):
    """3,000 records of 2,000 three-byte characters each: 18 MB, which one
    reply (4 MiB at most by default) could not carry."""
    _records(controller, 1)
    assert controller.stop() == 0
    store = controller.open_store()
    now = datetime.now(UTC)
    store.append_audits(
        AuditEntry(now, f"host:h-{i}", "order.refused", f"o-{i}", "refused", "€" * 2000)
        for i in range(3000)
    )
    store.close()
    controller.start()
    result = cli("fleetpatch", "audit", "export", "--json", "--data-dir", controller.data_dir)
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert [r["seq"] for r in records] == list(range(1, 3002))
    assert records[-1]["detail"] == "€" * 2000
    assert records[-1]["prev_hash"] == records[-2]["hash"]
    text = cli("fleetpatch", "audit", "export", "--data-dir", controller.data_dir)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "OUTCOME", "DETAIL"]
    assert len(lines) == 3002
    assert lines[-1].split()[:2] == ["3001", now.strftime("%Y-%m-%d")]
    assert controller.admin("audit", "verify").stdout.startswith("audit trail intact: 3001")


def test_export_since_streams_only_the_later_records(controller, tmp_path):
    _records(controller, 2)
    assert controller.stop() == 0
    store = controller.open_store()
    later = datetime(2099, 1, 1, tzinfo=UTC)
    store.append_audits(AuditEntry(later, "controller", "x.y", f"t-{i}", "ok") for i in range(2500))
    store.close()
    controller.start()
    records = controller.admin_json("audit", "export", "--since", "2098-12-31T00:00:00")
    assert isinstance(records, list)
    assert [r["seq"] for r in records] == list(range(3, 2503))
