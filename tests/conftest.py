"""Fixtures and checks shared by every suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.controller import Controller
from tests.support.packages import BUILDS_ENV
from tests.support.postgres import PostgresServer, missing_reason, running
from tests.support.scratch import until_exit

# `make test` sets this: run as root (as CI is), every suite can run here, so
# a skip means a suite silently did not (a sandbox that would not start, a
# container that did not boot). That fails the run instead of hiding it.
STRICT_SKIPS_ENV = "FLEETPATCH_STRICT_SKIPS"

_SKIPPED: list[str] = []  # "nodeid: reason" of every skip this session


def pytest_configure(config: pytest.Config) -> None:
    _share_bytecode()
    _share_builds()


def _share_builds() -> None:
    """One directory for this session's package builds, made here, in the
    process that starts pytest-xdist's workers (they inherit its
    environment): each version of the packages is then built once for the
    whole run (tests/support/packages.py takes turns on it), not once per
    worker, minutes each. Removed when this process exits."""
    if os.environ.get(BUILDS_ENV):
        return  # a worker: its controlling process made it
    root = until_exit("fleetpatch-test-debs-")
    os.environ[BUILDS_ENV] = str(root)


def _share_bytecode() -> None:
    """Let the Python processes the tests start (the CLIs, controllers,
    agents on this machine: hundreds of them) keep their bytecode in one
    directory of this session's, outside the tree, instead of compiling
    every module they import from source at every start.

    `make test` exports PYTHONDONTWRITEBYTECODE so that no __pycache__ lands
    in the checkout; with PYTHONPYCACHEPREFIX none does either, and the
    first process to import a module writes it there for the others.
    Commands in sandboxes and package builds do not inherit this
    environment (they start from their own), so what they do is unchanged.
    Left alone when the caller chose a prefix."""
    if os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    prefix = until_exit("fleetpatch-test-pyc-")
    prefix.chmod(0o755)  # readable by the tests' processes that are not root
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append(f"{report.nodeid}: {reason}")


def _strict() -> bool:
    return os.environ.get(STRICT_SKIPS_ENV) == "1" and os.geteuid() == 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _strict() and _SKIPPED and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = _SKIPPED
    if _strict() and skipped:
        terminalreporter.section("skips are failures here", sep="=", red=True, bold=True)
        terminalreporter.write_line(
            f"{STRICT_SKIPS_ENV}=1 as root: every suite can run on this machine, "
            f"so these {len(skipped)} skips fail the run:"
        )
        for line in skipped:
            terminalreporter.write_line(f"  {line}")


# The store the integration tests' controllers use when a test does not say:
# "sqlite" (the default) or "postgresql" (a fresh database per test).
STORE_ENV = "FLEETPATCH_TEST_STORE"
STORES = ("sqlite", "postgresql")


@pytest.fixture
def store_url(request: pytest.FixtureRequest) -> str:
    """The [store] url for a test's controller: "" (SQLite in its data dir)
    or a fresh PostgreSQL database's. A module runs on both with
    ``pytestmark = pytest.mark.parametrize("store_url", STORES, indirect=True)``;
    FLEETPATCH_TEST_STORE=postgresql runs the others on PostgreSQL."""
    kind = getattr(request, "param", None) or os.environ.get(STORE_ENV, "sqlite")
    if kind not in STORES:
        raise ValueError(f"{STORE_ENV}={kind!r}: use one of {', '.join(STORES)}")
    return str(request.getfixturevalue("postgres_url")) if kind == "postgresql" else ""


@pytest.fixture
def controller(tmp_path: Path, store_url: str) -> Iterator[Controller]:
    """A real controller on loopback (real TLS, real SQLite or PostgreSQL), stopped after."""
    ctl = Controller(tmp_path / "ctl", store_url=store_url)
    ctl.init()
    ctl.start()
    yield ctl
    ctl.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole session (a throwaway cluster
    in a temp dir), stopped at its end."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with running() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_template(postgres: PostgresServer) -> str:
    """A database with every migration applied, to copy for each test."""
    from controller.store import Store

    name = postgres.create_database()
    Store.connect(postgres.url(name)).close()
    return name


@pytest.fixture
def postgres_url(postgres: PostgresServer, postgres_template: str) -> Iterator[str]:
    """The URL of a fresh, migrated database of this test's own, dropped after."""
    name = postgres.create_database(postgres_template)
    yield postgres.url(name)
    postgres.drop_database(name)


@pytest.fixture(scope="session")
def _postgres_shared(postgres: PostgresServer, postgres_template: str) -> str:
    return postgres.create_database(postgres_template)


@pytest.fixture
def postgres_emptied_url(postgres: PostgresServer, _postgres_shared: str) -> Iterator[str]:
    """The URL of a migrated database that is empty for this test: one
    database for the session, every table emptied after each test (tens of
    milliseconds, where copying a database takes hundreds). For tests of
    the store's contract, whose connections are closed when they end."""
    yield postgres.url(_postgres_shared)
    postgres.empty_tables(_postgres_shared)
