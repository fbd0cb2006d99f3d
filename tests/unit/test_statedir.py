"""agent.statedir: the agent's state dir and agent.toml."""

from __future__ import annotations

import os
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from fleetpatch.identity import Identity, Role

from agent.errors import ConfigError, NotEnrolled, StateDirError
from agent.host.health import ResourceLimits
from agent.statedir import AgentConfig, KeyStatus, StateDir
from controller.fleet.pki import CertificateAuthority, new_key

HOST = "h-0123456789abcdef"


def _state(tmp_path: Path, text: str | None) -> StateDir:
    state = StateDir(tmp_path)
    if text is not None:
        state.config_file.write_text(text)
    return state


# -- config ---------------------------------------------------------------------


def test_config_written_by_enroll_reads_back(tmp_path):
    state = StateDir(tmp_path)
    state.write_config("ctl.example:7443", "ctl.example:7444")
    assert state.config() == AgentConfig(
        "ctl.example:7443", "ctl.example:7444", ResourceLimits(4.0, 0.97, 0.97)
    )
    assert state.config_file.stat().st_mode & 0o777 == 0o644


def test_config_minimal(tmp_path):
    config = _state(tmp_path, '[controller]\naddress = "ctl:7443"\n').config()
    assert config == AgentConfig("ctl:7443", "", ResourceLimits())


def test_config_package_manager_is_detected_unless_set(tmp_path):
    state = StateDir(tmp_path)
    state.write_config("ctl.example:7443", "ctl.example:7444")
    assert state.config().package_manager == ""
    text = '[controller]\naddress = "c:1"\n[agent]\npackage_manager = "dnf"\n'
    assert _state(tmp_path, text).config().package_manager == "dnf"


def test_config_textfile_is_off_unless_set(tmp_path):
    state = StateDir(tmp_path)
    state.write_config("ctl.example:7443", "ctl.example:7444")
    assert state.config().textfile is None
    text = '[controller]\naddress = "c:1"\n[metrics]\ntextfile = "/run/n/fleetpatch.prom"\n'
    assert _state(tmp_path, text).config().textfile == Path("/run/n/fleetpatch.prom")


def test_config_health_values(tmp_path):
    text = (
        '[controller]\naddress = "ctl:7443"\n'
        "[health]\nmax_load_per_cpu = 8\nmax_memory_used_ratio = 0\n"
    )
    limits = _state(tmp_path, text).config().health
    assert limits == ResourceLimits(max_load_per_cpu=8.0, max_memory_used_ratio=0.0)
    assert isinstance(limits.max_load_per_cpu, float)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[controller]\naddress = "c:1"\n[extra]\n', "extra: unknown table"),
        ('[controller]\naddress = "c:1"\nport = 1\n', "controller.port: unknown key"),
        ('[controller]\naddress = "c:1"\n[health]\nmax_cpu = 1\n', "health.max_cpu: unknown key"),
        ("", "agent.toml is empty"),
        ("[controller]\n", "controller.address: is required"),
        ('[controller]\naddress = ""\n', "controller.address: '' names no address"),
        # gRPC would dial 34463 (99999 mod 65536), or 443 for no port: a typo
        # must be a bad setting, not a controller that cannot be reached.
        ('[controller]\naddress = "c:99999"\n', "controller.address: 'c:99999' is not an"),
        ('[controller]\naddress = "c"\n', "controller.address: 'c' is not an address"),
        ('[controller]\naddress = "c:0"\n', r"'c:0' is not an address \(use HOST:PORT, port 1"),
        ('[controller]\naddress = "::1:7443"\n', "controller.address: '::1:7443' is not an"),
        ('[controller]\naddress = "a:1,b"\n', "controller.address: 'b' is not an address"),
        ('[controller]\naddress = " c :1"\n', "controller.address: 'c :1' is not an address"),
        (
            '[controller]\naddress = "c:1"\nenroll_address = "c:65536"\n',
            "controller.enroll_address: 'c:65536' is not an address",
        ),
        ("[controller]\naddress = 7443\n", "controller.address: must be a string"),
        ('controller = "c:1"\n', "controller: must be a table"),
        ('[controller]\naddress = "c:1"\n[health]\nmax_load_per_cpu = -1\n', "health.max_load"),
        # nan compares false with everything: a limit that would never be hit.
        (
            '[controller]\naddress = "c:1"\n[health]\nmax_load_per_cpu = nan\n',
            "health.max_load_per_cpu: must be a finite number >= 0, not nan",
        ),
        (
            '[controller]\naddress = "c:1"\n[health]\nmax_memory_used_ratio = inf\n',
            "health.max_memory_used_ratio: must be a finite number >= 0, not inf",
        ),
        (
            '[controller]\naddress = "c:1"\n[health]\nmax_disk_used_ratio = "high"\n',
            "health.max_disk_used_ratio: must be a number, not a string",
        ),
        (
            '[controller]\naddress = "c:1"\n[agent]\nretry_intreval = "1s"\n',
            r"agent.retry_intreval: unknown key \(did you mean 'retry_interval'\?\)",
        ),
        ('[controller\naddress = "c:1"\n', "agent.toml"),
        (
            '[controller]\naddress = "c:1"\n[metrics]\ntextfile = "fleetpatch.prom"\n',
            "metrics.textfile: must be an absolute path ending in .prom",
        ),
        (
            '[controller]\naddress = "c:1"\n[metrics]\ntextfile = "/var/lib/x/fleetpatch.txt"\n',
            "metrics.textfile: must be an absolute path ending in .prom",
        ),
        ('[controller]\naddress = "c:1"\n[metrics]\nport = 9100\n', "metrics.port: unknown key"),
        (
            '[controller]\naddress = "c:1"\n[agent]\npackage_manager = "yum"\n',
            r"agent.package_manager: must be one of apt, dnf, or \"\" to tell from",
        ),
    ],
)
def test_config_rejects_naming_the_field(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as caught:
        _state(tmp_path, text).config()
    assert str(tmp_path / "agent.toml") in str(caught.value)


def test_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"agent\.toml is missing \(restore it"):
        StateDir(tmp_path).config()


def test_config_not_utf8(tmp_path):
    (tmp_path / "agent.toml").write_bytes(b'[controller]\naddress = "\xff"\n')
    with pytest.raises(ConfigError, match=r"agent\.toml"):
        StateDir(tmp_path).config()


def test_config_rejects_a_boolean_threshold(tmp_path):
    text = '[controller]\naddress = "c:1"\n[health]\nmax_load_per_cpu = true\n'
    with pytest.raises(ConfigError, match=r"health\.max_load_per_cpu: must be a number"):
        _state(tmp_path, text).config()


# -- enrollment state -----------------------------------------------------------


def test_require_enrolled_missing_dir(tmp_path):
    state = StateDir(tmp_path / "nope")
    with pytest.raises(NotEnrolled, match="does not exist") as caught:
        state.require_enrolled()
    assert "fleetpatch-agent enroll" in str(caught.value)
    assert str(tmp_path / "nope") in str(caught.value)


def test_require_enrolled_empty_dir(tmp_path):
    with pytest.raises(NotEnrolled, match="holds no enrollment") as caught:
        StateDir(tmp_path).require_enrolled()
    assert f"fleetpatch-agent enroll --state-dir {tmp_path}" in str(caught.value)


def test_require_enrolled_needs_the_config_too(tmp_path):
    state = StateDir(tmp_path)
    state.cert.write_text("")
    assert state.is_enrolled()
    # Half an enrollment is a damaged state dir, named, not "not enrolled".
    with pytest.raises(StateDirError, match=r"agent\.toml is missing"):
        state.require_enrolled()
    state.write_config("c:1", "c:2")
    state.require_enrolled()
    state.cert.unlink()
    with pytest.raises(StateDirError, match=r"cert\.pem is missing"):
        state.require_enrolled()
    state.config_file.unlink()
    with pytest.raises(NotEnrolled, match="holds no enrollment"):
        state.require_enrolled()


def test_not_enrolled_is_a_config_error():
    assert issubclass(NotEnrolled, ConfigError)
    assert NotEnrolled.exit_code == 2


def test_create_makes_a_private_dir(tmp_path):
    state = StateDir(tmp_path / "a" / "b")
    state.create()
    assert state.path.is_dir()
    assert state.path.stat().st_mode & 0o777 == 0o700


def test_create_makes_parents_only_their_owner_may_write_whatever_the_umask(tmp_path):
    state = StateDir(tmp_path / "a" / "b" / "state")
    old = os.umask(0)
    try:
        state.create()
    finally:
        os.umask(old)
    assert state.path.stat().st_mode & 0o777 == 0o700
    for parent in (tmp_path / "a", tmp_path / "a" / "b"):
        assert parent.stat().st_mode & 0o777 == 0o755
    assert tmp_path.stat().st_mode & 0o777 == 0o700  # what existed is left as it was


# -- identity and trust ---------------------------------------------------------


def test_identity_from_the_host_certificate(tmp_path):
    ca = CertificateAuthority.create()
    cert = ca.issue_client(Identity(Role.HOST, HOST), new_key().public_key())
    state = StateDir(tmp_path)
    state.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert state.identity() == Identity(Role.HOST, HOST)
    assert state.host_id() == HOST


def test_identity_refuses_an_admin_certificate(tmp_path):
    state = StateDir(tmp_path)
    state.cert.write_bytes(CertificateAuthority.create().issue_admin().cert_pem)
    with pytest.raises(ConfigError, match=r"cert\.pem names no host"):
        state.identity()


def test_trusted_signing_keys_round_trip(tmp_path):
    state = StateDir(tmp_path)
    keys = {"b" * 16: bytes(range(32)), "a" * 16: bytes(32)}
    state.write_trusted_signing_keys(keys)
    assert state.trusted_signing_keys() == keys


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"k1": "not hex"}'])
def test_damaged_trusted_keys_are_a_config_error_naming_the_file(tmp_path, content):
    (tmp_path / "trusted_keys.json").write_bytes(content)
    with pytest.raises(ConfigError, match=r"trusted_keys\.json is damaged"):
        StateDir(tmp_path).trusted_signing_keys()


def test_a_damaged_certificate_is_a_config_error_naming_the_file(tmp_path):
    (tmp_path / "cert.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n")
    with pytest.raises(ConfigError, match=r"cert\.pem is not a PEM certificate"):
        StateDir(tmp_path).identity()


# -- the administrator's settings file (/etc/fleetpatch/agent.toml) ---------------

SHIPPED_SETTINGS = Path(__file__).resolve().parents[2] / "packaging/debian/agent/agent.toml"


def test_the_shipped_settings_file_sets_nothing_and_names_every_default(tmp_path):
    import tomllib

    text = SHIPPED_SETTINGS.read_text()
    assert tomllib.loads(text) == {}, "as shipped, every setting is commented out"
    # Its "# " lines, uncommented, are exactly the defaults enroll writes.
    setting = re.compile(r"# (\[[a-z]+\]|[a-z_]+ = .*)$")
    uncommented = "\n".join(line[2:] for line in text.splitlines() if setting.match(line))
    settings = tmp_path / "agent.toml"
    settings.write_text(uncommented)
    enrolled = StateDir(tmp_path / "state", settings)
    enrolled.path.mkdir()
    enrolled.write_config("ctl.example:7443", "ctl.example:7444")
    assert enrolled.config() == StateDir(enrolled.path).config()
    assert "[agent]" in uncommented
    assert "allow_agent_update = true" in uncommented


def test_settings_override_the_enrollments_key_by_key(tmp_path):
    state = StateDir(tmp_path / "state", tmp_path / "settings.toml")
    state.path.mkdir()
    state.write_config("ctl.example:7443", "ctl.example:7444")
    assert state.config() == StateDir(state.path).config(), "no settings file: the state dir's"
    (tmp_path / "settings.toml").write_text(
        '[policy]\nnever_touch = ["postgresql-*"]\n[health]\nmax_load_per_cpu = 8.0\n'
    )
    config = state.config()
    assert config.policy.never_touch == ("postgresql-*",)
    assert config.policy.allow_reboot is True, "the state dir's other [policy] keys stay"
    assert config.health == ResourceLimits(8.0, 0.97, 0.97)
    assert config.controller == "ctl.example:7443"


def test_settings_may_not_move_the_controller_and_are_read_strictly(tmp_path):
    state = StateDir(tmp_path / "state", tmp_path / "settings.toml")
    state.path.mkdir()
    state.write_config("ctl.example:7443", "ctl.example:7444")
    (tmp_path / "settings.toml").write_text('[controller]\naddress = "evil:7443"\n')
    with pytest.raises(ConfigError, match=r"\[controller\] belongs to the enrollment"):
        state.config()
    (tmp_path / "settings.toml").write_text("[policy]\nnever_tuch = []\n")
    with pytest.raises(ConfigError, match=r"settings.toml: policy.never_tuch"):
        state.config()
    (tmp_path / "settings.toml").write_text("[policy\n")
    with pytest.raises(ConfigError, match=r"settings.toml: "):
        state.config()


def test_which_settings_file_goes_with_a_state_dir():
    from agent.statedir import DEFAULT_STATE_DIR, SETTINGS_FILE, settings_for

    assert settings_for(DEFAULT_STATE_DIR, {}) == SETTINGS_FILE
    assert settings_for(Path("/srv/agent"), {}) is None
    named = {"FLEETPATCH_AGENT_SETTINGS": "/srv/agent.toml"}
    assert settings_for(Path("/srv/agent"), named) == Path("/srv/agent.toml")


# -- key status -----------------------------------------------------------------


def test_key_status_round_trips_and_withdraws_a_retired_key(tmp_path):
    state = StateDir(tmp_path)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    state.write_key_status(KeyStatus({"new": "old"}, {"old": at}, {"bad": at}))
    read = state.key_status()
    assert read == KeyStatus({"new": "old"}, {"old": at}, {"bad": at})
    assert read.withdrawn(at + timedelta(seconds=1)) == {
        "old": "was retired at 2026-01-02 03:04:05Z",
        "bad": "was revoked",
    }


@pytest.mark.parametrize(
    "doc",
    [
        # A time without an offset cannot be compared with the clock's: it
        # would fail at the first order, not here.
        '{"endorsed_by": {}, "retire_at": {"a": "2020-01-01T00:00:00"}, "revoked": {}}',
        '{"endorsed_by": {}, "retire_at": {}, "revoked": {"a": "2020-01-01"}}',
        '{"endorsed_by": {}, "retire_at": {"a": "soon"}, "revoked": {}}',
        '{"endorsed_by": [], "retire_at": {}, "revoked": {}}',
        '{"retire_at": {}, "revoked": {}}',
        "[]",
    ],
)
def test_a_damaged_key_status_is_a_state_dir_error_naming_the_file(tmp_path, doc):
    state = StateDir(tmp_path)
    state.key_status_file.write_text(doc)
    with pytest.raises(StateDirError, match=r"key_status\.json is damaged"):
        state.key_status()


# -- enrolling again over an agent.toml -------------------------------------------


def _edited(state: StateDir) -> str:
    """agent.toml as enroll wrote it, with its policy tightened by hand."""
    state.write_config("old:7443", "old:7444")
    text = state.config_file.read_text()
    text = text.replace("allow_reboot = true", "allow_reboot = false  # ours: never")
    text = text.replace("never_touch = []", 'never_touch = ["openssl*"]')
    state.config_file.write_text(text)
    return text


def test_enrolling_again_keeps_every_setting_but_the_controller(tmp_path):
    old = StateDir(tmp_path / "old")
    old.create()
    kept = _edited(old)
    new = StateDir(tmp_path / "new")
    new.create()
    new.write_config("new:7443", "new:7444", keep=old.config_file)
    text = new.config_file.read_text()
    assert "allow_reboot = false  # ours: never" in text  # comments and all
    assert text.replace('"new:744', '"old:744') == kept
    config = new.config()
    assert config.controller == "new:7443"
    assert config.policy == old.config().policy
    assert not config.policy.allow_reboot


@pytest.mark.parametrize(
    "kept",
    [
        "[policy]\nallow_reboot = false\n",  # no [controller]: added
        "# only a comment",
        '[policy]\nallow_reboot = false\n[controller]\naddress = "old:1"\n',  # last
        '[controller]\r\naddress = "old:1"\r\n[policy]\r\nallow_reboot = false\r\n',  # CRLF
        '["controller"]\naddress = "old:1"\n[policy]\nallow_reboot = false\n',  # quoted
    ],
)
def test_enrolling_again_over_other_layouts(tmp_path, kept):
    old = tmp_path / "agent.toml"
    old.write_text(kept)
    state = StateDir(tmp_path / "new")
    state.create()
    state.write_config("new:7443", "new:7444", keep=old)
    config = state.config()
    assert (config.controller, config.enroll_address) == ("new:7443", "new:7444")
    assert config.policy.allow_reboot == ("allow_reboot = false" not in kept)


@pytest.mark.parametrize(
    ("kept", "message"),
    [
        ('controller = { address = "old:1" }\n', "cannot rewrite \\[controller\\]"),
        ('controller.address = "old:1"\n[policy]\n', "cannot rewrite \\[controller\\]"),
        ("[policy\n", "does not parse"),
        ("allow_reboot = \xff\n", "does not parse"),
    ],
)
def test_enrolling_again_over_what_cannot_be_kept_is_refused(tmp_path, kept, message):
    old = tmp_path / "agent.toml"
    old.write_bytes(kept.encode("latin-1"))
    state = StateDir(tmp_path / "new")
    state.create()
    with pytest.raises(ConfigError, match=message):
        state.write_config("new:7443", "new:7444", keep=old)
    assert not state.config_file.exists()
    assert old.read_bytes() == kept.encode("latin-1")


# -- one agent at a time --------------------------------------------------------


def test_a_state_dir_is_held_by_one_process_at_a_time(tmp_path):
    state = StateDir(tmp_path)
    held = state.hold()
    with pytest.raises(StateDirError, match="is in use by another fleetpatch-agent"):
        state.hold()
    os.close(held)
    os.close(state.hold())


def test_the_service_waits_for_the_holder(tmp_path):
    state = StateDir(tmp_path)
    held = state.hold()
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(state.hold(wait=True)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()
    assert got == []
    os.close(held)
    waiter.join(10)
    assert not waiter.is_alive()
    assert len(got) == 1
    os.close(got[0])


# -- files that are not regular files ----------------------------------------------


def test_a_settings_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "settings.toml"
    os.mkfifo(fifo)
    state = StateDir(tmp_path / "state", fifo)
    state.create()
    state.write_config("c:1", "c:2")
    with pytest.raises(ConfigError, match=r"settings\.toml is not a regular file \(it is a FIFO"):
        state.config()  # before: blocked for ever in open()


def test_an_agent_toml_that_is_a_directory_is_not_called_missing(tmp_path):
    state = StateDir(tmp_path)
    state.cert.write_text("x")
    state.config_file.mkdir()
    with pytest.raises(
        StateDirError, match=r"agent\.toml is not a regular file \(it is a directory"
    ):
        state.require_enrolled()
    with pytest.raises(
        StateDirError, match=r"agent\.toml is not a regular file \(it is a directory"
    ):
        state.config()
