"""Fixtures for integration tests that need a real host: a throwaway
copy-on-write sandbox of this machine, and a local apt repository.

Tests using them skip, with the reason, where sandboxes cannot work (not
root, no namespaces, overlay refused) or dpkg-dev is missing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.apthost import AptHost
from tests.support.debrepo import LocalAptRepo, debrepo_available, use_repo
from tests.support.packages import (
    DEB_MOUNT,
    SystemdContainer,
    built_debs,
    next_version,
    packaging_available,
    session_debs_root,
    systemd_container_available,
)
from tests.support.prometheus import Prometheus
from tests.support.prometheus import binary as prometheus_binary
from tests.support.sandbox import HostSandbox, sandbox_available


def _require_sandbox() -> None:
    reason = sandbox_available()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def host_sandbox() -> Iterator[HostSandbox]:
    """A started HostSandbox with default options, stopped after the test."""
    _require_sandbox()
    with HostSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., HostSandbox]]:
    """Start sandboxes with options (HostSandbox keyword arguments), several
    per test if needed; all are stopped after the test."""
    _require_sandbox()
    started: list[HostSandbox] = []

    def make(**options: Any) -> HostSandbox:
        sandbox = HostSandbox(**options).start()
        started.append(sandbox)
        return sandbox

    yield make
    errors: list[Exception] = []
    for sandbox in reversed(started):
        try:
            sandbox.stop()
        except Exception as exc:  # stop them all, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def deb_repo(tmp_path: Path) -> LocalAptRepo:
    """An empty local flat apt repository; `repo.add(DebSpec(...))` fills it,
    `debrepo.use_repo(sandbox, repo)` makes it a sandbox's only source."""
    reason = debrepo_available()
    if reason is not None:
        pytest.skip(reason)
    return LocalAptRepo(tmp_path / "apt-repo")


@pytest.fixture
def apt_host(controller, make_sandbox, deb_repo) -> AptHost:
    """A sandboxed host whose apt sees only `deb_repo`, with the real agent
    enrolled with the real `controller` (see tests.support.apthost)."""
    sandbox = make_sandbox()
    use_repo(sandbox, deb_repo, update=False)
    host = AptHost(sandbox, controller, deb_repo)
    host.enroll()
    return host


@pytest.fixture
def container(make_sandbox, tmp_path) -> Iterator[SystemdContainer]:
    """systemd booted on a sandbox's root, the session's packages (this
    version and the next, built before the boot: the slow part) bound at
    DEB_MOUNT with the release key that signed them."""
    reason = systemd_container_available() or packaging_available()
    if reason is not None:
        pytest.skip(reason)
    sandbox: HostSandbox = make_sandbox(machine_id=uuid.uuid4().hex)
    sandbox.bind(session_debs_root(), DEB_MOUNT)
    built_debs(next_version(built_debs().version))
    # Where nspawn and systemd are here, a container that does not boot is a
    # failure to look at, not a skip: a busy machine only gets a longer wait.
    booted = SystemdContainer(sandbox, tmp_path / "console.log")
    yield booted
    booted.stop()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """One real Prometheus for the whole session (tests point it at their
    controller with `set_targets`), with the rules of packaging/prometheus."""
    if prometheus_binary("prometheus") is None:
        pytest.skip(
            "prometheus is not installed (Debian package prometheus; make deps installs it)"
        )
    server = Prometheus(tmp_path_factory.mktemp("prometheus"))
    server.start()
    yield server
    server.stop()
