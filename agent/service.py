"""The agent put together: journal, runner, check-ins and reports, built
from a state dir. The CLI is a thin shell over this."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import fleetpatch
from fleetpatch.v1 import types_pb2

from agent import preflight
from agent.backends.base import Busy, PackageBackend, PlanError
from agent.boot.reboot import FileValue, Inhibitor
from agent.errors import CommandFailed, ConfigError
from agent.host import updates
from agent.host.facts import package_manager
from agent.host.updates import Available
from agent.link import reporting
from agent.link.client import ControllerClient
from agent.orders.handover import HandOver, handover_due
from agent.orders.journal import Journal
from agent.orders.states import TERMINAL, State
from agent.statedir import AgentConfig, StateDir
from agent.textfile import Textfile

if TYPE_CHECKING:
    # What only carrying out an order needs: loaded when a runner is made
    # (an order came, or one was interrupted), not by the idle daemon.
    from agent.boot.decide import Reason
    from agent.boot.livepatch import Provider
    from agent.boot.reboot import Rebooter
    from agent.host.checks import Probes
    from agent.host.restarts import Services
    from agent.orders.runner import Runner
    from agent.orders.selfupdate import Watchdog

log = logging.getLogger(__name__)
FIRST_SCAN_WITHIN = timedelta(minutes=10)


def backend_for(manager: str, config: AgentConfig) -> PackageBackend:
    """The package backend for the host's package manager, its mutating
    commands run under a shutdown inhibitor lock. Raises ConfigError."""
    run = Inhibitor(why="fleetpatch is installing updates")
    if manager == "apt":
        from agent.backends.apt import Apt

        return Apt(run=run, lock_timeout=int(config.timing.lock_timeout.total_seconds()))
    if manager == "dnf":
        from agent.backends.dnf import Dnf

        return Dnf(run=run)
    raise ConfigError(f"no package backend for {manager or 'this host'} (supported: apt, dnf)")


def _real_signals(config: AgentConfig, backend: PackageBackend) -> Callable[[], list[Reason]]:
    from agent.host.needs import RebootSignals

    kernel = FileValue(config.reboot.kernel_release_file)
    # A backend may know more about reboots (dnf needs-restarting).
    extra: Callable[[], list[Reason]] | None = getattr(backend, "reboot_reasons", None)
    return RebootSignals(kernel, extra=[extra] if extra is not None else []).collect


def _real_services(backend: PackageBackend) -> Services | None:
    """The host's services, where systemd runs them (sd_booted: the
    directory /run/systemd/system exists) and the backend lists package
    files; the backend's own restart list (dnf needs-restarting) or else
    needrestart's adds what a scan of /proc cannot see."""
    from agent.host.restarts import Services, needrestart

    files = getattr(backend, "files", None)
    if files is None or not Path("/run/systemd/system").is_dir():
        return None
    tool = getattr(backend, "services_to_restart", None) or needrestart()
    return Services(files, tool)


def _real_rebooter(config: AgentConfig) -> Rebooter | None:
    from agent.boot.reboot import CommandRebooter

    return CommandRebooter(config.reboot.command)


def _real_prober() -> Probes:
    from agent.host.checks import Prober

    return Prober()


def _real_livepatch() -> Sequence[Provider]:
    from agent.boot.livepatch import CanonicalLivepatch, Kpatch

    return (Kpatch(), CanonicalLivepatch())


def _real_watchdog() -> Watchdog | None:
    from agent.orders.selfupdate import SystemdWatchdog

    return SystemdWatchdog()


@dataclass(frozen=True)
class Machine:
    """The parts of the agent that act on this machine beyond its state dir,
    each made from the agent's config. The defaults are the real ones; a
    test replaces what cannot run where it runs (a package manager it must
    not touch, a real reboot) and keeps all the rest of the wiring. All but
    the backend are made only with the order runner (`Agent.runner`)."""

    backend: Callable[[str, AgentConfig], PackageBackend] = backend_for
    prober: Callable[[], Probes] = _real_prober
    rebooter: Callable[[AgentConfig], Rebooter | None] = _real_rebooter
    reboot_signals: Callable[[AgentConfig, PackageBackend], Callable[[], Sequence[Reason]]] = (
        _real_signals
    )
    livepatch: Callable[[], Sequence[Provider]] = _real_livepatch
    watchdog: Callable[[], Watchdog | None] = _real_watchdog
    services: Callable[[PackageBackend], Services | None] = _real_services


@dataclass
class Agent:
    """The agent of a state dir. Its order runner (`runner`) is made, and
    the modules that carry out orders loaded, only when it is first needed:
    an order came, or the journal holds one a crash or reboot interrupted
    (`resume`). The idle daemon does without them (issue 18: memory)."""

    state: StateDir
    config: AgentConfig
    journal: Journal
    make_runner: Callable[[], Runner]
    host_id: str
    client: ControllerClient | None = None
    reports: reporting.Reports | None = None
    textfile: Textfile | None = None
    backend: PackageBackend | None = None
    last_refusal: str = ""  # why `handle` last refused an order
    _runner: Runner | None = field(default=None, init=False, repr=False)

    @property
    def runner(self) -> Runner:
        """The order runner, made at the first call."""
        if self._runner is None:
            self._runner = self.make_runner()
            self._runner.set_notify(self.report)
        return self._runner

    @classmethod
    def open(
        cls,
        state: StateDir,
        online: bool = True,
        machine: Machine = Machine(),
        check: Callable[[StateDir], preflight.Checked] = preflight.in_process,
    ) -> Agent:
        """The agent of an enrolled state dir, checked by ``check`` (the
        daemon's: in a child, `preflight.in_child`). Raises ConfigError
        (NotEnrolled)."""
        checked = check(state)
        config, credentials = checked.config, checked.credentials
        journal = Journal.open(state.journal, must_exist=True)
        state.private_dir(state.cache)
        backend = machine.backend(package_manager(config.package_manager), config)
        client = None
        if online:
            client = ControllerClient(
                config.controller, credentials.ca_pem, credentials.key_pem, credentials.cert_pem
            )

        def make_runner() -> Runner:
            from agent.orders.runner import Runner

            return Runner(
                journal,
                backend,
                machine.prober(),
                config.policy,
                config.checks,
                state.cache,
                busy_timeout=config.timing.busy_timeout,
                retry_interval=config.timing.retry_interval.total_seconds(),
                boot_id=FileValue(config.reboot.boot_id_file),
                kernel=FileValue(config.reboot.kernel_release_file),
                reboot_signals=machine.reboot_signals(config, backend),
                livepatch=machine.livepatch(),
                rebooter=machine.rebooter(config),
                reboot_timeout=config.timing.reboot_timeout,
                fetch=client.fetch_artifact if client is not None else None,
                reach=client.reach if client is not None else None,
                watchdog=machine.watchdog(),
                services=machine.services(backend),
            )

        reports = reporting.Reports(journal, client) if client is not None else None
        textfile = Textfile(config.textfile, journal) if config.textfile is not None else None
        return cls(state, config, journal, make_runner, checked.host_id, client, reports,
                   textfile, backend)  # fmt: skip

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.journal.close()

    def resume(self) -> None:
        """Finish the orders a crash or reboot interrupted (the runner is
        made only when the journal holds one), report, and hand over when
        another version of the agent is installed."""
        if self.journal.unfinished(frozenset(TERMINAL)):
            for order_id, final in self.runner.resume():
                log.info("order %s finished after resuming: %s", order_id, final)
        self.report()
        self._hand_over_if_due()

    def _hand_over_if_due(self) -> None:
        """Exit (HandOver) when another version of the agent is installed
        than the one running: after an agent update reverted by this
        process, say, when systemd did not restart it."""
        if self.backend is None:
            return
        # The runner's own check (`UpdateSteps.handover_due`), without a runner.
        due = handover_due(self.backend, fleetpatch.__version__)
        if due is not None:
            raise HandOver(due)

    def handle(self, envelope: types_pb2.SignedEnvelope) -> State | None:
        """Verify and carry out one order; None when it was refused."""
        from agent.orders.workorder import OrderRefused

        try:
            keys, withdrawn = self.state.usable_signing_keys(datetime.now(UTC))
            order = self.runner.receive(envelope, keys, self.host_id, withdrawn)
        except OrderRefused as refused:
            self.last_refusal = str(refused)
            self.report()
            return None
        self.report()
        try:
            final = self.runner.run(order.order_id)
        finally:
            self.report()
        self._hand_over_if_due()
        return final

    def scan(self) -> list[Available]:
        """Refresh the package lists and record the updates available here
        (nothing is installed). Raises Busy (the package manager is held by
        someone else), CommandFailed, or PlanError when the backend cannot
        list updates."""
        backend = self.backend
        available = getattr(backend, "available", None)
        if backend is None or available is None:
            raise PlanError("this agent's package backend cannot list updates")
        try:
            backend.refresh()
        except CommandFailed as exc:
            log.warning("package lists not refreshed (%s); scanning with what is here", exc)
        found: list[Available] = available()
        now = datetime.now(UTC)
        interval = self.config.timing.scan_interval
        jitter = random.uniform(0.9, 1.1)
        self.journal.record_scan(updates.to_json(found), now, now + interval * jitter)
        return found

    def scan_if_due(self) -> None:
        """`scan`, when the schedule says so; trouble is logged and retried
        at the next check-in (a held dpkg lock, say), never raised."""
        due, now = self.journal.next_scan(), datetime.now(UTC)
        if due is None:
            # A fleet whose agents all start at once (a rollout of the agent,
            # a power cut) must not hit its mirrors at once: the first scan
            # comes within the first tenth of the interval, at most 10 min.
            first = min(self.config.timing.scan_interval / 10, FIRST_SCAN_WITHIN)
            self.journal.set_next_scan(now + first * random.random())
            return
        if now < due:
            return
        try:
            found = self.scan()
        except (Busy, CommandFailed, PlanError) as exc:
            log.warning("scanning for available updates failed: %s", exc)
            return
        security = sum(1 for u in found if u.security)
        log.info("%d update(s) available (%d security)", len(found), security)

    def between(self) -> None:
        """Before each check-in of the service: send what is queued, and
        scan for available updates when that is due."""
        self.report()
        self.scan_if_due()

    def report(self) -> int:
        """Send the queued reports (called after every state entry), and
        bring the metrics textfile up to date with the journal."""
        self.write_metrics()
        if self.reports is None:
            return 0
        return self.reports.flush()

    def write_metrics(self) -> None:
        if self.textfile is not None:
            self.textfile.write()
