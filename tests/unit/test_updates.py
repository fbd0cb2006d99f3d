"""Available updates: what dnf prints read right, the hash both ends agree
on, and the scan schedule of the agent. (Real apt and dnf scans are in
tests/integration/test_apt_agent.py and test_dnf_backend.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fleetpatch.inventory import UPDATE_FIELDS, updates_hash
from fleetpatch.v1 import types_pb2

from agent.backends.dnf import parse_check_update, parse_updateinfo
from agent.host import updates
from agent.host.updates import Available, needs_reboot
from agent.link import convert
from agent.orders.journal import Journal
from agent.service import Agent
from agent.statedir import AgentConfig, Timing
from tests.support.fakes import FakeBackend

CHECK_UPDATE = """
fp-demo.noarch                         3.0-1                          fleetpatch
kernel-core.x86_64                     5.14.0-503.el9                 baseos
openssl-libs.x86_64                    1:3.0.7-27.el9                 baseos
Obsoleting Packages
fp-new.noarch                          1.0-1                          fleetpatch
    fp-old.noarch                      0.9-1                          @System
"""
UPDATEINFO = """\
FP-SA-1 Important/Sec. fp-demo-2.0-1.noarch
FP-BA-2 bugfix         fp-demo-3.0-1.noarch
RHSA-2025:1 Moderate/Sec. openssl-libs-1:3.0.7-27.el9.x86_64
not an advisory line
"""


def test_check_update_lists_updates_and_stops_at_obsoletes():
    assert parse_check_update(CHECK_UPDATE) == [
        ("fp-demo", "noarch", "3.0-1", "fleetpatch"),
        ("kernel-core", "x86_64", "5.14.0-503.el9", "baseos"),
        ("openssl-libs", "x86_64", "1:3.0.7-27.el9", "baseos"),
    ]


def test_updateinfo_lines_give_advisory_type_and_severity():
    advised = parse_updateinfo(UPDATEINFO)
    assert [(a.id, a.security, a.severity) for a in advised["fp-demo"]] == [
        ("FP-SA-1", True, "Important"), ("FP-BA-2", False, ""),
    ]  # fmt: skip
    assert [(a.id, a.severity) for a in advised["openssl-libs"]] == [("RHSA-2025:1", "Moderate")]
    assert set(advised) == {"fp-demo", "openssl-libs"}


def test_kernels_and_core_userland_need_a_reboot_other_packages_do_not():
    for name in ("linux-image-6.1.0-28-amd64", "kernel-core", "libc6", "glibc", "systemd",
                 "intel-microcode", "dbus-broker"):  # fmt: skip
        assert needs_reboot(name), name
    for name in ("nginx", "openssl", "libssl3", "systemd-timesyncd", "libc6-dev"):
        assert not needs_reboot(name), name


def sample() -> list[Available]:
    return [
        Available("fp-demo", "all", "1.0", "1.2", "Debian:12/stable", True, reboot=False),
        Available(
            "libc6",
            "amd64",
            "2.36-9",
            "2.36-9+deb12u9",
            "Debian-Security",
            True,
            severity="",
            advisory="",
            reboot=True,
        ),
    ]


def test_both_ends_hash_the_same_list_the_same_whatever_its_order():
    found = sample()
    agent_side = updates.digest(found)
    assert agent_side == updates.digest(list(reversed(found)))
    wire = convert.updates_to_pb(found, datetime(2026, 12, 1, tzinfo=UTC))
    rows = [tuple(getattr(u, f) for f in UPDATE_FIELDS) for u in wire.updates]
    assert updates_hash(rows) == agent_side  # what the controller checks
    changed = [found[0], Available(**{**vars(found[1]), "candidate": "2.36-9+deb12u10"})]
    assert updates.digest(changed) != agent_side
    assert isinstance(wire, types_pb2.AvailableUpdates)


def test_the_journal_keeps_the_last_scan_and_what_the_controller_holds(tmp_path):
    journal = Journal.open(tmp_path / "journal.db")
    try:
        assert journal.scan() == ([], None)
        assert journal.next_scan() is None
        at = datetime(2026, 12, 1, 12, tzinfo=UTC)
        journal.record_scan(updates.to_json(sample()), at, at + timedelta(hours=6))
        kept, when = journal.scan()
        assert updates.from_json(kept) == sample()
        assert when == at
        assert journal.next_scan() == at + timedelta(hours=6)
        journal.ack_updates("sha256:abc")
        assert journal.acked_updates_hash() == "sha256:abc"
    finally:
        journal.close()


class Scanning:
    """A package backend with updates to offer, recording what it is asked."""

    name = "scanning"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def refresh(self) -> None:
        self.calls.append("refresh")

    def available(self) -> list[Available]:
        self.calls.append("available")
        return sample()


def test_the_service_scans_first_within_a_tenth_of_the_interval_then_on_schedule(tmp_path):
    journal = Journal.open(tmp_path / "journal.db")
    backend = Scanning()
    config = AgentConfig("c:1", "c:2", timing=Timing(scan_interval=timedelta(hours=6)))
    agent = Agent(None, config, journal, None, "h-1", backend=backend)  # type: ignore[arg-type]
    try:
        started = datetime.now(UTC)
        agent.scan_if_due()  # the first call only sets when: agents starting together spread
        assert journal.scan() == ([], None)
        first = journal.next_scan()
        assert first is not None
        assert started <= first <= started + timedelta(minutes=10, seconds=1)
        journal.set_next_scan(started - timedelta(seconds=1))  # that time has come
        agent.scan_if_due()
        assert backend.calls == ["refresh", "available"]
        kept, at = journal.scan()
        assert updates.from_json(kept) == sample()
        upcoming = journal.next_scan()
        assert at is not None
        assert upcoming is not None
        assert timedelta(hours=5.4) <= upcoming - at <= timedelta(hours=6.6)
        agent.scan_if_due()  # not due again yet
        assert backend.calls == ["refresh", "available"]
    finally:
        journal.close()


def test_the_tests_fake_package_manager_can_be_scanned(tmp_path):
    """The in-process agents of the integration tests run on FakeBackend,
    and their first scan comes at a random time: it must work like the real
    backends' (it once raised TypeError and killed the check-in thread)."""
    journal = Journal.open(tmp_path / "journal.db")
    backend = FakeBackend({"fp-demo": "1.0", "curl": "7.88"}, {"fp-demo": "1.1", "zsh": "5.9"})
    agent = Agent(None, AgentConfig("c:1", "c:2"), journal, None, "h-1", backend=backend)  # type: ignore[arg-type]
    try:
        (found,) = agent.scan()
        assert (found.name, found.installed, found.candidate) == ("fp-demo", "1.0", "1.1")
        assert backend.calls == ["refresh", "available"]
        assert [u.name for u in updates.from_json(journal.scan()[0])] == ["fp-demo"]
    finally:
        journal.close()
