"""controller.datadir: addresses, controller.toml and the data dir's state."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.datadir import (
    CONFIG_TEMPLATE,
    DEFAULT_PORT,
    DataDir,
    Settings,
    default_enroll_address,
    join_address,
    split_address,
)
from controller.errors import DataDirError, UsageError

# -- addresses ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("localhost:7443", "localhost", 7443),
        ("10.0.0.1:1", "10.0.0.1", 1),
        ("0.0.0.0:0", "0.0.0.0", 0),  # noqa: S104 - a string, not a bind
        ("ctl.example.com:65535", "ctl.example.com", 65535),
        ("[::1]:7443", "::1", 7443),
        ("[::]:7443", "::", 7443),
        ("[fe80::1%eth0]:80", "fe80::1%eth0", 80),
    ],
)
def test_split_address(address, host, port):
    assert split_address(address) == (host, port)


@pytest.mark.parametrize(
    "address",
    [
        "",
        "localhost",
        "localhost:",
        ":7443",
        "host:port",
        "host:65536",
        "host:-1",
        "[::1]",
        "[]:7443",
        " localhost:7443",
        "local host:7443",
        "a,b:7443",
        "host:\uff17443",
    ],
)
def test_split_address_rejects(address):
    with pytest.raises(UsageError, match=r"is not an address \(use HOST:PORT\)") as caught:
        split_address(address)
    assert repr(address) in str(caught.value)


@pytest.mark.parametrize(
    ("host", "port", "address"),
    [("localhost", 7443, "localhost:7443"), ("::1", 7443, "[::1]:7443"), ("::", 0, "[::]:0")],
)
def test_join_address(host, port, address):
    assert join_address(host, port) == address


@given(
    st.one_of(
        st.ip_addresses().map(str),
        st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,20}){0,3}", fullmatch=True),
    ),
    st.integers(min_value=0, max_value=65535),
)
def test_join_then_split_round_trips(host, port):
    assert split_address(join_address(host, port)) == (host, port)


@pytest.mark.parametrize(
    ("listen", "enroll"),
    [
        ("0.0.0.0:7443", "0.0.0.0:7444"),
        ("[::]:7443", "[::]:7444"),
        ("localhost:9000", "localhost:9001"),
        ("127.0.0.1:0", "127.0.0.1:0"),  # an ephemeral port stays ephemeral
    ],
)
def test_default_enroll_address_is_the_next_port(listen, enroll):
    assert default_enroll_address(listen) == enroll


def test_default_enroll_address_rejects_a_bad_address():
    with pytest.raises(UsageError, match="is not an address"):
        default_enroll_address("nonsense")


def test_split_address_rejects_bare_ipv6():
    with pytest.raises(UsageError):
        split_address("::1")


def test_default_enroll_address_of_the_last_port_is_valid_or_refused():
    try:
        enroll = default_enroll_address("h:65535")
    except UsageError:
        return
    split_address(enroll)  # whatever it returns must be an address


# -- settings -------------------------------------------------------------------


def _datadir(tmp_path: Path, text: str | None) -> DataDir:
    if text is not None:
        (tmp_path / "controller.toml").write_text(text)
    return DataDir(tmp_path)


def test_settings_defaults_for_an_empty_file(tmp_path):
    assert _datadir(tmp_path, "").settings() == Settings(
        listen=f"0.0.0.0:{DEFAULT_PORT}",
        enroll_listen=f"0.0.0.0:{DEFAULT_PORT + 1}",
        advertise=f"0.0.0.0:{DEFAULT_PORT}",
        checkin_interval=timedelta(minutes=5),
        checkin_jitter=0.2,
    )


def test_settings_identities_and_the_two_person_rule(tmp_path):
    text = "[campaigns]\nrequire_second_approver = true\n[certificates]\nadmin_lifetime = '30d'\n"
    settings = _datadir(tmp_path, text).settings()
    assert settings.require_second_approver is True
    assert settings.admin_certificate_lifetime == timedelta(days=30)
    defaults = _datadir(tmp_path, "").settings()
    assert defaults.require_second_approver is False
    assert defaults.admin_certificate_lifetime == timedelta(days=365)


def test_settings_from_the_template(tmp_path):
    text = CONFIG_TEMPLATE.format(listen="[::]:8443", advertise="ctl.example:8443", interval="30s")
    settings = _datadir(tmp_path, text).settings()
    assert settings == Settings(
        listen="[::]:8443",
        enroll_listen="[::]:8444",
        advertise="ctl.example:8443",
        checkin_interval=timedelta(seconds=30),
        checkin_jitter=0.2,
    )


def test_settings_all_fields(tmp_path):
    text = """
[server]
listen = "127.0.0.1:9000"
enroll_listen = "127.0.0.1:9100"
advertise = "localhost:9000"

[checkin]
interval = "1h30m"
jitter = 0
"""
    assert _datadir(tmp_path, text).settings() == Settings(
        "127.0.0.1:9000", "127.0.0.1:9100", "localhost:9000", timedelta(minutes=90), 0.0
    )


def test_settings_audit_table(tmp_path):
    text = "[audit]\nrefusal_window = '2h'\ncheckpoint_interval = '15m'\n"
    settings = _datadir(tmp_path, text).settings()
    assert settings.refusal_window == timedelta(hours=2)
    assert settings.checkpoint_interval == timedelta(minutes=15)


def test_settings_release_public_key_is_relative_to_the_data_dir(tmp_path):
    relative = _datadir(tmp_path, "[releases]\npublic_key = 'keys/release.pub'\n").settings()
    assert relative.release_public_key == tmp_path / "keys" / "release.pub"
    absolute = _datadir(tmp_path, "[releases]\npublic_key = '/etc/r.pub'\n").settings()
    assert absolute.release_public_key == Path("/etc/r.pub")
    assert _datadir(tmp_path, "[releases]\npublic_key = ''\n").settings().release_public_key is None
    assert DataDir(tmp_path).artifacts == tmp_path / "artifacts"


def test_settings_metrics_listener_is_off_unless_set(tmp_path):
    assert _datadir(tmp_path, "").settings().metrics_listen == ""
    text = CONFIG_TEMPLATE.format(listen="[::]:8443", advertise="ctl.example:8443", interval="30s")
    assert _datadir(tmp_path, text).settings().metrics_listen == ""
    on = _datadir(tmp_path, "[metrics]\nlisten = '127.0.0.1:9464'\n").settings()
    assert on.metrics_listen == "127.0.0.1:9464"
    with pytest.raises(UsageError, match=r"metrics\.listen: '9464' is not an address"):
        _datadir(tmp_path, "[metrics]\nlisten = '9464'\n").settings()
    with pytest.raises(UsageError, match=r"unknown key metrics\.port"):
        _datadir(tmp_path, "[metrics]\nport = 9464\n").settings()


def test_settings_interval_as_plain_seconds(tmp_path):
    settings = _datadir(tmp_path, "[checkin]\ninterval = 90\n").settings()
    assert settings.checkin_interval == timedelta(seconds=90)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[extra]\n", r"unknown table \[extra\]"),
        ("[server]\nport = 1\n", "unknown key server.port"),
        ("[checkin]\nperiod = '5m'\n", "unknown key checkin.period"),
        ("server = 1\n", r"\[server\] must be a table"),
        ("checkin = 'often'\n", r"\[checkin\] must be a table"),
        ("[checkin]\ninterval = 'soon'\n", "checkin.interval: 'soon' is not a duration"),
        ("[checkin]\njitter = 1\n", r"checkin.jitter must be a number in \[0, 1\)"),
        ("[checkin]\njitter = -0.1\n", r"checkin.jitter must be a number in \[0, 1\)"),
        ("[checkin]\njitter = '0.2'\n", r"checkin.jitter must be a number in \[0, 1\)"),
        ("[releases]\npublic_key = 1\n", "releases.public_key must be a path"),
        ("[releases]\nkey = 'x'\n", "unknown key releases.key"),
        ("[audit]\nrefusal_window = 'soon'\n", "audit.refusal_window: 'soon' is not a duration"),
        ("[audit]\nrefusal_window = '0s'\n", "audit.refusal_window must be at least 1s"),
        ("[audit]\nwindow = '1m'\n", "unknown key audit.window"),
        ("[audit]\ncheckpoint_interval = 0\n", "audit.checkpoint_interval must be at least 1s"),
        ("[audit]\ncheckpoint_interval = 'x'\n", "audit.checkpoint_interval: 'x' is not"),
        (
            "[campaigns]\nrequire_second_approver = 'yes'\n",
            "campaigns.require_second_approver must be true or false",
        ),
        ("[certificates]\nadmin_lifetime = 'x'\n", "certificates.admin_lifetime: 'x' is not"),
        ("[store]\nurl = 'sqlite:///x.db'\n", "store.url must be a postgresql:// URL"),
        ("[store]\nurl = 5\n", "store.url must be a string"),
        ("[store]\ndsn = 'x'\n", "unknown key store.dsn"),
        (
            "[checkin]\nwrite_behind = '2m'\n",
            r"checkin.write_behind must be at most 60s \(0s: off\)",
        ),
        ("[checkin]\nwrite_behind = 'x'\n", "checkin.write_behind: 'x' is not a duration"),
        ("[checkin]\nheld_hosts = -1\n", "checkin.held_hosts must be a whole number >= 0"),
        ("[checkin]\nheld_hosts = true\n", "checkin.held_hosts must be a whole number >= 0"),
        ("[checkin\n", "controller.toml"),  # not TOML at all
    ],
)
def test_settings_rejects_naming_the_field(tmp_path, text, message):
    with pytest.raises(UsageError, match=message) as caught:
        _datadir(tmp_path, text).settings()
    assert str(tmp_path / "controller.toml") in str(caught.value)


def test_settings_store_is_sqlite_unless_a_postgresql_url_is_set(tmp_path):
    assert _datadir(tmp_path, "").settings().store_url == ""
    url = "postgresql://fleetpatch@db.example.com/fleetpatch?sslmode=verify-full"
    assert _datadir(tmp_path, f"[store]\nurl = '{url}'\n").settings().store_url == url


def test_settings_write_behind_on_by_default_and_zero_turns_it_off(tmp_path):
    defaults = _datadir(tmp_path, "").settings()
    assert (defaults.checkin_write_behind, defaults.checkin_held_hosts) == (
        timedelta(seconds=1), 500_000,
    )  # fmt: skip
    off = _datadir(tmp_path, "[checkin]\nwrite_behind = '0s'\nheld_hosts = 10\n").settings()
    assert (off.checkin_write_behind, off.checkin_held_hosts) == (timedelta(0), 10)


def test_settings_rejects_a_bad_listen_address(tmp_path):
    with pytest.raises(UsageError, match="'nowhere' is not an address"):
        _datadir(tmp_path, "[server]\nlisten = 'nowhere'\n").settings()


def test_settings_rejects_non_utf8(tmp_path):
    (tmp_path / "controller.toml").write_bytes(b"[server]\nlisten = '\xff'\n")
    with pytest.raises(UsageError, match=r"controller\.toml"):
        DataDir(tmp_path).settings()


def test_settings_without_a_file(tmp_path):
    with pytest.raises(DataDirError, match=r"cannot read .*controller\.toml"):
        DataDir(tmp_path).settings()


def test_settings_bad_listen_names_the_field(tmp_path):
    with pytest.raises(UsageError, match=r"controller\.toml.*server\.listen"):
        _datadir(tmp_path, "[server]\nlisten = 'nowhere'\n").settings()


@pytest.mark.parametrize("field", ["enroll_listen", "advertise"])
def test_settings_rejects_bad_other_addresses(tmp_path, field):
    with pytest.raises(UsageError, match=f"server.{field}|is not an address"):
        _datadir(tmp_path, f"[server]\n{field} = 'nowhere'\n").settings()


# -- the data dir ---------------------------------------------------------------


def test_require_initialised_missing_dir(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataDirError, match="does not exist") as caught:
        DataDir(missing).require_initialised()
    assert str(missing) in str(caught.value)
    assert "fleetpatch controller init --data-dir DIR" in str(caught.value)


def test_require_initialised_empty_dir(tmp_path):
    with pytest.raises(DataDirError, match=r"is not initialised \(no controller.toml, ca.pem; run"):
        DataDir(tmp_path).require_initialised()


def test_require_initialised_names_only_what_is_missing(tmp_path):
    (tmp_path / "controller.toml").write_text("")
    with pytest.raises(DataDirError, match=r"\(no ca.pem;"):
        DataDir(tmp_path).require_initialised()


def test_require_initialised_passes(tmp_path):
    (tmp_path / "controller.toml").write_text("")
    (tmp_path / "ca.pem").write_text("")
    DataDir(tmp_path).require_initialised()


def test_require_initialised_on_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(DataDirError, match="is not a directory"):
        DataDir(path).require_initialised()


def test_data_dir_error_is_a_usage_error():
    assert issubclass(DataDirError, UsageError)
    assert DataDirError.exit_code == 2


def test_write_private_is_0600(tmp_path):
    datadir = DataDir(tmp_path)
    datadir.write_private(datadir.ca_key, b"secret")
    assert datadir.ca_key.stat().st_mode & 0o777 == 0o600
    assert datadir.read(datadir.ca_key) == b"secret"
    datadir.write_public(datadir.ca_cert, b"public")
    assert datadir.ca_cert.stat().st_mode & 0o777 == 0o644


def test_client_address_prefers_the_running_server(tmp_path):
    datadir = _datadir(tmp_path, "[server]\nadvertise = 'ctl.example:7443'\n")
    assert datadir.client_address() == "ctl.example:7443"
    datadir.write_endpoints("127.0.0.1:40001", "127.0.0.1:40002")
    assert json.loads(datadir.endpoints.read_text())["enroll_address"] == "127.0.0.1:40002"
    assert datadir.client_address() == "127.0.0.1:40001"


def test_client_address_ignores_a_broken_endpoints_file(tmp_path):
    datadir = _datadir(tmp_path, "[server]\nadvertise = 'ctl.example:7443'\n")
    datadir.endpoints.write_text("{not json")
    assert datadir.client_address() == "ctl.example:7443"


# -- the administrator's settings file (/etc/fleetpatch/controller.toml) -----------

SHIPPED_SETTINGS = (
    Path(__file__).resolve().parents[2] / "packaging/debian/controller/controller.toml"
)


def test_the_shipped_settings_file_sets_nothing_and_names_every_default(tmp_path):
    import re
    import tomllib

    text = SHIPPED_SETTINGS.read_text()
    assert tomllib.loads(text) == {}, "as shipped, every setting is commented out"
    setting = re.compile(r"# (\[[a-z]+\]|[a-z_]+ = .*)$")
    (tmp_path / "etc.toml").write_text(
        "\n".join(line[2:] for line in text.splitlines() if setting.match(line))
    )
    template = CONFIG_TEMPLATE.format(
        listen="0.0.0.0:7443", advertise="ctl.example.net:7443", interval="5m"
    )
    (tmp_path / "controller.toml").write_text(template)
    assert DataDir(tmp_path, tmp_path / "etc.toml").settings() == DataDir(tmp_path).settings()


def test_settings_file_overrides_init_key_by_key_and_errors_name_both(tmp_path):
    template = CONFIG_TEMPLATE.format(listen="0.0.0.0:7443", advertise="ctl:7443", interval="5m")
    (tmp_path / "controller.toml").write_text(template)
    etc = tmp_path / "etc.toml"
    data = DataDir(tmp_path, etc)
    assert data.settings() == DataDir(tmp_path).settings(), "no file: init's settings"
    etc.write_text('[checkin]\ninterval = "30s"\n')
    settings = data.settings()
    assert settings.checkin_interval == timedelta(seconds=30)
    assert settings.checkin_jitter == 0.2, "init's other [checkin] keys stay"
    assert settings.advertise == "ctl:7443"
    etc.write_text('[checkin]\ninterval = "soon"\n')
    with pytest.raises(UsageError, match=r"controller.toml with .*etc.toml: checkin.interval"):
        data.settings()
    etc.write_text("[servr]\n")
    with pytest.raises(UsageError, match=r"etc.toml: unknown table \[servr\]"):
        data.settings()


def test_which_settings_file_goes_with_a_data_dir():
    from controller.datadir import DEFAULT_DATA_DIR, SETTINGS_FILE, settings_for

    assert settings_for(DEFAULT_DATA_DIR, {}) == SETTINGS_FILE
    assert settings_for(Path("/srv/ctl"), {}) is None
    named = {"FLEETPATCH_CONTROLLER_SETTINGS": "/srv/c.toml"}
    assert settings_for(Path("/srv/ctl"), named) == Path("/srv/c.toml")
    assert DataDir.at(DEFAULT_DATA_DIR).settings_file == SETTINGS_FILE
