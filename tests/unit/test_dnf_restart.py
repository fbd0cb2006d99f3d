"""The dnf backend's answers for the restart logic: which services run
replaced code (`dnf needs-restarting -s`) and which files packages own
(`rpm -ql`). Parsers on real output shapes; the methods with a scripted
runner for what the sandbox cannot produce (the real commands run in
tests/integration/test_dnf_backend.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from agent.backends.dnf import Dnf, parse_file_list, parse_needs_restarting_services
from agent.backends.subp import Result
from agent.errors import CommandFailed

# What dnf-plugins-core 4.x prints for -s: one unit per line (in no
# particular order: it walks a set), after whatever dnf and its plugins log.
NEEDS_RESTARTING = """\
Updating Subscription Management repositories.
Last metadata expiration check: 0:12:01 ago on Tue 01 Dec 2026 15:00:00 UTC.
sshd.service
  nginx.service\x20\x20

getty@tty1.service
systemd-journald.service
sshd.service
user@1000.service
session-3.scope
Failed to read PID 4242's smaps.
not a unit.service
"""


def test_needs_restarting_services_are_the_service_lines_sorted_once():
    assert parse_needs_restarting_services(NEEDS_RESTARTING) == [
        "getty@tty1.service",
        "nginx.service",
        "sshd.service",
        "systemd-journald.service",
        "user@1000.service",
    ]


def test_nothing_to_restart_is_an_empty_list():
    assert parse_needs_restarting_services("") == []
    assert parse_needs_restarting_services("\n\n") == []


RPM_QL = """\
/etc/nginx
/etc/nginx/nginx.conf
/usr/sbin/nginx
/usr/lib64/libssl.so.3
(contains no files)
package fp-gone is not installed
"""


def test_file_list_keeps_only_paths():
    assert parse_file_list(RPM_QL) == {
        "/etc/nginx", "/etc/nginx/nginx.conf", "/usr/sbin/nginx", "/usr/lib64/libssl.so.3",
    }  # fmt: skip


class Script:
    """A runner answering each command with a scripted result."""

    def __init__(self, returncode: int, stdout: str = "", stderr: str = "") -> None:
        self.answer = (returncode, stdout, stderr)
        self.argvs: list[list[str]] = []

    def __call__(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
        timeout: float = 120.0, check: bool = True, cwd: str | None = None,
    ) -> Result:  # fmt: skip
        self.argvs.append(list(argv))
        returncode, stdout, stderr = self.answer
        if check and returncode != 0:
            raise CommandFailed(list(argv), returncode, stdout, stderr)
        return Result(list(argv), returncode, stdout, stderr)


def test_services_to_restart_asks_needs_restarting_for_services():
    run = Script(0, "nginx.service\nsshd.service\n")
    assert Dnf(run=run).services_to_restart() == ["nginx.service", "sshd.service"]
    assert run.argvs == [["dnf", "--setopt=exit_on_lock=True", "-q", "needs-restarting", "-s"]]


@pytest.mark.parametrize(
    ("returncode", "stderr"),
    [
        (  # dnf-plugins-core not installed (as dnf 4.14 says it)
            1,
            "No such command: needs-restarting. Please use /usr/bin/dnf --help\n"
            "It could be a DNF plugin command, try: "
            "\"dnf install 'dnf-command(needs-restarting)'\"\n",
        ),
        (  # no system bus: the plugin's dbus call raises (shape of the message assumed)
            1,
            "dbus.exceptions.DBusException: org.freedesktop.DBus.Error.FileNotFound: "
            "Failed to connect to socket /run/dbus/system_bus_socket\n",
        ),
        (2, ""),  # any other error exit
    ],
)
def test_needs_restarting_that_cannot_tell_is_command_failed(returncode, stderr):
    with pytest.raises(CommandFailed):
        Dnf(run=Script(returncode, "sshd.service\n", stderr)).services_to_restart()


def test_files_of_installed_packages_and_none_of_the_others():
    run = Script(1, "/usr/bin/fp-demo\n/usr/share/fp-demo\npackage fp-gone is not installed\n")
    assert Dnf(run=run).files(["fp-demo", "fp-gone"]) == {"/usr/bin/fp-demo", "/usr/share/fp-demo"}
    assert run.argvs == [["rpm", "-ql", "fp-demo", "fp-gone"]]


def test_files_of_nothing_asks_nothing():
    run = Script(0)
    assert Dnf(run=run).files([]) == set()
    assert run.argvs == []


def test_files_when_rpm_fails_is_command_failed():
    run = Script(1, "", "error: cannot open Packages database in /var/lib/rpm\n")
    with pytest.raises(CommandFailed):
        Dnf(run=run).files(["fp-demo"])
