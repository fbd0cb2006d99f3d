"""The apt backend's revert falls back to dpkg when apt refuses because of
an unrelated broken package (seen for real: another package half-installed
on the host made every `apt-get install` fail). Driven with a scripted
command runner; the real path is exercised in the sandbox tests."""

from __future__ import annotations

from agent.backends import subp
from agent.backends.apt import Apt
from agent.backends.base import Saved, Snapshot


class Host:
    def __init__(self) -> None:
        self.version = "1.1"
        self.calls: list[list[str]] = []

    def run(self, argv, **kwargs):
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "dpkg-query":
            return subp.Result(argv, 0, f"fp-demo\t{self.version}\tii \n", "")
        if argv[0] == "apt-get":
            return subp.Result(
                argv, 100, "", "E: The package deltarpm needs to be reinstalled, "
                "but I can't find an archive for it.\n",
            )  # fmt: skip
        if argv[:2] == ["dpkg", "--audit"]:
            return subp.Result(argv, 0, "", "")
        if argv[0] == "dpkg" and "--install" in argv:
            self.version = "1.0"
            return subp.Result(argv, 0, "", "")
        raise AssertionError(f"unexpected command {argv}")


def test_revert_falls_back_to_dpkg_when_apt_refuses():
    host = Host()
    snapshot = Snapshot((Saved("fp-demo", "all", "1.0", "/cache/fp-demo_1.0_all.deb"),), ())
    changes = Apt(run=host.run).revert(snapshot)
    assert [(c.name, c.old, c.new) for c in changes] == [("fp-demo", "1.1", "1.0")]
    dpkg = next(c for c in host.calls if c[0] == "dpkg" and "--install" in c)
    assert dpkg[-1] == "/cache/fp-demo_1.0_all.deb"
    assert "--force-downgrade" in dpkg
    assert any(c[0] == "apt-get" for c in host.calls)  # apt was tried first


def test_every_lock_message_apt_prints_means_busy():
    from agent.backends.apt import _LOCK

    for line in (
        "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 42 (apt-get)",
        "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), "
        "is another process using it?",
        "E: Unable to lock the administration directory (/var/lib/dpkg/), "
        "is another process using it?",
        "dpkg: error: dpkg frontend lock was locked by another process with pid 42",
    ):
        assert _LOCK.search(line), line
    assert not _LOCK.search("E: Unable to locate package fp-demo")
