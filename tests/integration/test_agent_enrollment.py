"""Enrollment is all or nothing on the agent's side, against a real
controller over real TLS: nothing is sent before the state dir takes
writes and the controller's certificate verifies against --ca-cert;
nothing is left half-written when anything fails after the call; the new
identity makes one mutual-TLS call; the token can come from a file or
standard input."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fleetpatch.v1 import agent_pb2, types_pb2

from agent.errors import AgentError, ConfigError, StateDirError
from agent.link.client import enroll_call
from agent.link.enrollment import Enrolled, enroll
from agent.statedir import StateDir
from tests.support import mounts
from tests.support.controller import BIN, Controller, Result
from tests.support.waiting import scaled


def _one_line(result: Result, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _uses(ctl: Controller) -> int:
    tokens = ctl.admin_json("token", "list")
    assert isinstance(tokens, list)
    assert len(tokens) == 1
    return int(tokens[0].get("uses", 0))


def _hosts(ctl: Controller) -> list[object]:
    hosts = ctl.admin_json("hosts", "list")
    assert isinstance(hosts, list)
    return hosts


def _enroll_cli(ctl: Controller, state: Path, *token_args: str | Path, ca: Path | None = None,
                stdin: str | None = None) -> Result:  # fmt: skip
    argv = [str(BIN / "fleetpatch-agent"), "enroll", "--controller", ctl.address,
            "--ca-cert", str(ca or ctl.data_dir / "ca.pem"), "--state-dir", str(state),
            *map(str, token_args)]  # fmt: skip
    done = subprocess.run(
        argv, input=stdin or "", capture_output=True, text=True, timeout=scaled(120), check=False
    )
    return Result(done.returncode, done.stdout, done.stderr)


def _in_process(ctl: Controller, state: Path, token: str, **seams: Any) -> Enrolled:
    return enroll(StateDir(state), ctl.address, token, ctl.data_dir / "ca.pem", {}, **seams)


# -- before the token is sent ---------------------------------------------------------


def test_a_wrong_ca_cert_fails_before_the_token_is_sent(controller, tmp_path):
    other = Controller(tmp_path / "other")
    other.init()  # another CA, never started
    token = controller.token(uses=1)
    state = tmp_path / "state"
    result = _enroll_cli(controller, state, "--token", token, ca=other.data_dir / "ca.pem")
    _one_line(result, 7, controller.enroll_address, "--ca-cert does not verify",
              "no token was sent")  # fmt: skip
    assert _uses(controller) == 0
    assert _hosts(controller) == []
    assert not state.exists()
    # The same token still enrolls, with the right CA.
    assert _enroll_cli(controller, state, "--token", token).returncode == 0
    assert _uses(controller) == 1
    assert len(_hosts(controller)) == 1


def test_a_read_only_state_dir_fails_before_the_token_is_sent(controller, tmp_path):
    token = controller.token(uses=1)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)  # as systemd's StateDirectory= makes it
    with mounts.read_only(state):
        result = _enroll_cli(controller, state, "--token", token)
    _one_line(result, 2, str(state), "read-only")
    assert _uses(controller) == 0
    assert list(state.iterdir()) == []


def test_a_full_state_dir_fails_before_the_token_is_sent(controller, tmp_path):
    token = controller.token(uses=1)
    empty = tmp_path / "state"
    empty.mkdir()
    with mounts.full_copy(empty, tmp_path / "fs") as state:
        result = _enroll_cli(controller, state, "--token", token)
        _one_line(result, 2, "no space left", "free some space")
        assert list(state.iterdir()) == []
    assert _uses(controller) == 0


def test_room_for_the_answer_is_kept_while_the_token_is_spent(controller, tmp_path):
    """The filesystem fills up while the controller answers: the state
    written after the call still fits (the reserve is freed for it)."""
    empty = tmp_path / "state"
    empty.mkdir()
    with mounts.full_copy(empty, tmp_path / "fs", size="4m") as state:
        (tmp_path / "fs" / "filler").unlink()

        def answer_then_fill(
            address: str, ca: bytes, request: agent_pb2.EnrollRequest
        ) -> agent_pb2.EnrollResponse:
            response = enroll_call(address, ca, request)
            mounts.fill(tmp_path / "fs" / "filler")
            return response

        done = _in_process(controller, state, controller.token(), call=answer_then_fill)
        assert StateDir(state).is_enrolled()
        StateDir(state).credentials()
        assert done.unconfirmed == ""


# -- after the call: nothing half-written ---------------------------------------------


def _no_signing_keys(
    address: str, ca: bytes, request: agent_pb2.EnrollRequest
) -> agent_pb2.EnrollResponse:
    response = enroll_call(address, ca, request)
    del response.signing_keys[:]
    return response


def _interrupted(
    address: str, ca: bytes, request: agent_pb2.EnrollRequest
) -> agent_pb2.EnrollResponse:
    enroll_call(address, ca, request)
    raise KeyboardInterrupt  # Ctrl-C just as the answer arrived


@pytest.mark.parametrize(
    ("call", "raised"), [(_no_signing_keys, AgentError), (_interrupted, KeyboardInterrupt)]
)
@pytest.mark.parametrize("existing", [False, True], ids=["new dir", "empty dir"])
def test_a_failure_after_the_call_leaves_the_state_dir_as_it_was(
    controller, tmp_path, call, raised, existing
):
    state = tmp_path / "state"
    if existing:
        state.mkdir(mode=0o700)
    with pytest.raises(raised):
        _in_process(controller, state, controller.token(), call=call)
    if existing:
        assert list(state.iterdir()) == []
    else:
        assert not state.exists()
    # ... and the next enrollment works.
    assert _enroll_cli(controller, state, "--token", controller.token()).returncode == 0


def test_leftovers_of_a_killed_enrollment_are_cleared(controller, tmp_path):
    state = tmp_path / "state"
    (state / ".enroll-killed").mkdir(parents=True)
    (state / ".enroll-killed" / "key.pem").write_text("half")
    (state / "key.pem").write_text("from a killed enrollment")
    (state / "journal.db-wal").write_bytes(b"an old identity's WAL")
    assert _enroll_cli(controller, state, "--token", controller.token()).returncode == 0
    assert sorted(p.name for p in state.iterdir()) == [
        "agent.toml", "ca.pem", "cert.pem", "journal.db", "key.pem", "trusted_keys.json",
    ]  # fmt: skip
    StateDir(state).credentials()


# -- at the end: one call as the new host ---------------------------------------------


def test_enrollment_ends_with_a_call_as_the_new_host(controller, tmp_path):
    done = _in_process(controller, tmp_path / "state", controller.token())
    assert done.unconfirmed == ""


def test_a_failed_first_call_is_a_warning_not_a_failure(controller, tmp_path):
    def answer_then_stop(
        address: str, ca: bytes, request: agent_pb2.EnrollRequest
    ) -> agent_pb2.EnrollResponse:
        response = enroll_call(address, ca, request)
        controller.stop()
        return response

    state = tmp_path / "state"
    done = _in_process(controller, state, controller.token(), call=answer_then_stop)
    assert "cannot reach the controller" in done.unconfirmed
    assert StateDir(state).is_enrolled()


# -- the token from a file or standard input ------------------------------------------


def test_token_from_a_file(controller, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(f"  {controller.token()}\n\n")
    result = _enroll_cli(controller, tmp_path / "state", "--token-file", token_file)
    assert result.returncode == 0, result.stderr
    assert "enrolled as" in result.stdout


def test_token_from_standard_input(controller, tmp_path):
    result = _enroll_cli(
        controller, tmp_path / "state", "--token-file", "-", stdin=f"{controller.token()}\n"
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        ([], None, "one of --token and --token-file"),
        (["--token", "t", "--token-file", "-"], "t", "one of --token and --token-file"),
        (["--token-file", "EMPTY"], None, "is empty"),
        (["--token-file", "-"], " \n", "standard input) is empty"),
        (["--token-file", "MISSING"], None, "cannot read --token-file"),
    ],
)
def test_token_mistakes(controller, tmp_path, args, stdin, needle):
    (tmp_path / "empty").write_text("\n")
    files = {"EMPTY": tmp_path / "empty", "MISSING": tmp_path / "missing"}
    argv = [files.get(a, a) for a in args]
    _one_line(_enroll_cli(controller, tmp_path / "state", *argv, stdin=stdin), 2, needle)
    assert not (tmp_path / "state").exists()


def test_the_settings_are_read_before_the_token_is_sent_and_name_the_package_manager(
    controller, tmp_path
):
    """The administrator's settings file is read as the daemon reads it:
    a mistake in it is one line and spends no token; the package manager
    it sets is the one the enrollment reports (before the first check-in)."""
    settings = tmp_path / "settings.toml"
    settings.write_text('[agent]\npackage_manager = "zypper"\n')
    state = StateDir(tmp_path / "bad", settings)
    with pytest.raises(ConfigError, match="package_manager"):
        enroll(state, controller.address, controller.token(), controller.data_dir / "ca.pem", {})
    assert _uses(controller) == 0
    assert not state.path.exists()

    sent: list[agent_pb2.EnrollRequest] = []

    def recorded(address: str, ca_pem: bytes, request: agent_pb2.EnrollRequest) -> Any:
        sent.append(request)
        return enroll_call(address, ca_pem, request)

    settings.write_text('[agent]\npackage_manager = "dnf"\n')  # on this Debian host
    state = StateDir(tmp_path / "good", settings)
    enroll(state, controller.address, controller.token(), controller.data_dir / "ca.pem", {},
           call=recorded)  # fmt: skip
    assert [r.facts.package_manager for r in sent] == ["dnf"]
    assert state.config().package_manager == "dnf"


# -- enrolling again, and one enrollment at a time ------------------------------------


def test_enrolling_again_keeps_the_hosts_own_settings(controller, tmp_path):
    """A host enrolled again (its certificate lost, expired, or from a CA
    since rotated) keeps the policy set on it: only [controller] is new."""
    state = StateDir(tmp_path / "state")
    _in_process(controller, state.path, controller.token())
    text = state.config_file.read_text()
    text = text.replace("allow_reboot = true", "allow_reboot = false  # set on this host")
    text = text.replace("never_touch = []", 'never_touch = ["openssl*", "linux-image*"]')
    text = text.replace(controller.address, "moved.example:7443")
    state.config_file.write_text(text)
    state.cert.unlink()  # not enrolled any more: enroll again
    result = _enroll_cli(controller, state.path, "--token", controller.token())
    assert result.returncode == 0, result.stderr
    after = state.config_file.read_text()
    assert "allow_reboot = false  # set on this host" in after
    config = state.config()
    assert not config.policy.allow_reboot
    assert config.policy.never_touch == ("openssl*", "linux-image*")
    assert config.controller == controller.address


def test_a_ca_bundle_is_judged_whole_and_only_the_fleets_ca_is_pinned(controller, tmp_path):
    other = Controller(tmp_path / "other")
    other.init()  # another CA
    ours, theirs = (
        (controller.data_dir / "ca.pem").read_bytes(),
        (other.data_dir / "ca.pem").read_bytes(),
    )
    for name, bundle in (("theirs-first", theirs + ours), ("ours-first", ours + theirs)):
        (tmp_path / name).write_bytes(bundle)
        state = tmp_path / f"state-{name}"
        result = _enroll_cli(controller, state, "--token", controller.token(), ca=tmp_path / name)
        assert result.returncode == 0, (name, result.stderr)
        assert (state / "ca.pem").read_bytes() == ours, name
        StateDir(state).credentials()


def test_a_state_dir_another_agent_holds_is_refused_before_the_token_is_sent(controller, tmp_path):
    state = StateDir(tmp_path / "state")
    state.create()
    held = state.hold()  # as a running enroll, apply or service would
    try:
        token = controller.token(uses=1)
        result = _enroll_cli(controller, state.path, "--token", token)
        _one_line(result, 2, str(state.path), "in use by another fleetpatch-agent")
        assert _uses(controller) == 0
        assert list(state.path.iterdir()) == []
    finally:
        os.close(held)
    assert _enroll_cli(controller, state.path, "--token", token).returncode == 0


def test_a_run_by_hand_beside_the_service_is_refused(controller, tmp_path):
    state = StateDir(tmp_path / "state")
    _in_process(controller, state.path, controller.token())
    held = state.hold()  # the service, at work
    try:
        done = subprocess.run(
            [str(BIN / "fleetpatch-agent"), "run", "--once", "--state-dir", str(state.path)],
            capture_output=True, text=True, timeout=scaled(120), check=False,
        )  # fmt: skip
    finally:
        os.close(held)
    _one_line(Result(done.returncode, done.stdout, done.stderr), 2, "in use by another")
    assert done.stdout == ""


def test_an_apply_beside_the_service_is_refused_before_the_order_is_looked_at(controller, tmp_path):
    state = StateDir(tmp_path / "state")
    _in_process(controller, state.path, controller.token())
    order = tmp_path / "order.bin"
    # Unsigned: it would be refused (exit 4) if the held state dir were not first.
    order.write_bytes(types_pb2.SignedEnvelope(payload=b"an order").SerializeToString())
    held = state.hold()
    try:
        done = subprocess.run(
            [str(BIN / "fleetpatch-agent"), "apply", "--offline", "--state-dir", str(state.path),
             str(order)],
            capture_output=True, text=True, timeout=scaled(120), check=False,
        )  # fmt: skip
    finally:
        os.close(held)
    _one_line(Result(done.returncode, done.stdout, done.stderr), 2, "in use by another")


@pytest.mark.parametrize("odd", ["directory", "dangling symlink"])
def test_enrolling_again_over_a_state_file_that_is_not_a_file_spends_no_token(
    controller, tmp_path, odd
):
    """cert.pem a directory: the move failed after the token was spent, and
    the rollback removed the host's agent.toml and keys. agent.toml a
    dangling symlink: the defaults were written in its place, exit 0."""
    state = StateDir(tmp_path / "state")
    _in_process(controller, state.path, controller.token())
    state.cert.unlink()
    odd_path = state.cert if odd == "directory" else state.config_file
    if odd == "directory":
        odd_path.mkdir()
    else:
        odd_path.unlink()
        odd_path.symlink_to(tmp_path / "nowhere.toml")
    before = sorted(p.name for p in state.path.iterdir())
    token = controller.token(uses=1)
    result = _enroll_cli(controller, state.path, "--token", token)
    _one_line(result, 2, str(odd_path), "no token was sent")
    assert len(_hosts(controller)) == 1  # the first enrollment's only
    assert sorted(p.name for p in state.path.iterdir()) == before


def test_a_move_that_fails_puts_back_what_it_replaced(tmp_path):
    from agent.link.enrollment import _move_in

    state, staging = StateDir(tmp_path / "state"), StateDir(tmp_path / "staging")
    state.create()
    staging.create()
    names = ("key.pem", "ca.pem", "journal.db", "journal.db-wal", "agent.toml", "cert.pem")
    for name in names:
        (state.path / name).write_text(f"old {name}")
    for name in ("key.pem", "ca.pem", "journal.db", "agent.toml", "cert.pem"):
        (staging.path / name).write_text(f"new {name}")  # trusted_keys.json missing: fails
    moved: list[Path] = []
    with pytest.raises(StateDirError):
        _move_in(state, staging, moved)
    assert moved == []
    assert {p.name: p.read_text() for p in state.path.iterdir()} == {
        name: f"old {name}" for name in names
    }
