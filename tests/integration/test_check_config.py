"""`fleetpatch-agent check` on an agent.toml whose [[checks]] hold a value
no probe could use: one line naming the field, exit 2, never a traceback."""

from __future__ import annotations

import pytest

from tests.support.controller import cli

CONFIG = '[controller]\naddress = "127.0.0.1:1"\n\n[[checks]]\nname = "x"\n'


@pytest.mark.parametrize(
    ("check", "needle"),
    [
        (f'kind = "tcp"\nport = 80\nhost = "{"a" * 100}"\n', "checks[0].host: "),
        ('kind = "tcp"\nport = 80\nhost = "a..b"\n', "checks[0].host: 'a..b' is not a host"),
        ('kind = "http"\nurl = "http://[::1"\n', "checks[0].url: 'http://[::1' is not a URL"),
        ('kind = "http"\nurl = "http://local host/"\n', "checks[0].url: "),
        ('kind = "command"\nargv = ["/bin/true\\u0000x"]\n', "checks[0].argv[0]: "),
        ('kind = "systemd"\nunit = "a\\u0000b"\n', "checks[0].unit: 'a\\x00b' is not"),
    ],
    ids=["long-label", "empty-label", "ipv6-bracket", "space-in-host", "nul-argv", "nul-unit"],
)
def test_a_check_no_probe_could_use_is_a_config_error(tmp_path, check, needle):
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG + check)
    result = cli("fleetpatch-agent", "check", "--state-dir", tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"{config}: {needle}" in line, line
    assert result.stdout == ""
