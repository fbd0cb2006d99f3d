"""Agents driven in-process against a real controller over real mTLS: the
real `Agent` wiring (enrollment, agent.toml, journal, runner, check-ins and
reports, exactly as `fleetpatch-agent run` builds them); only what must not
act on the machine running the tests is replaced through `Machine`: the
package manager and health checks (tests.support.fakes), and reboots (an
in-process agent never reboots, and reads no reboot-required file of this
machine). Many fit in one test process, to run whole campaigns quickly."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from agent.backends.packages import Inventory
from agent.host import facts as hostfacts
from agent.link.checkin import CheckIns
from agent.link.enrollment import enroll
from agent.link.keys import learn_announced
from agent.orders.states import State
from agent.service import Agent, Machine
from agent.statedir import StateDir
from tests.support.controller import Controller
from tests.support.fakes import FakeBackend, FakeProber


def tokens_for(
    controller: Controller, cells: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], str]:
    """One enrollment token per (region, ring) of ``cells``, with a use for
    each time the cell is named: for a fixture enrolling many agents, one
    `fleetpatch token create` per cell rather than per agent."""
    return {
        (region, ring): controller.token(region=region, ring=ring, uses=uses)
        for (region, ring), uses in Counter(cells).items()
    }


class InProcessAgent:
    def __init__(
        self,
        controller: Controller,
        state_dir: Path,
        region: str,
        ring: int,
        backend: FakeBackend,
        prober: FakeProber,
        labels: dict[str, str] | None = None,
        defer: bool = False,
        agent_version: str | None = None,
        textfile: Path | None = None,
        address: str | None = None,
        token: str | None = None,
    ) -> None:
        """``defer``: carry out an order at the next round rather than at
        once, so that it stays in flight on the controller meanwhile.
        ``agent_version``: what the agent reports (default: this one's);
        settable between rounds. ``textfile``: agent.toml's [metrics] textfile.
        ``address``: agent.toml's [controller] address after enrolling (the
        controller's own by default; several, comma-separated, for replicas).
        ``token``: an enrollment token for ``region`` and ``ring`` with a use
        left (`tokens_for`); by default one is made for this agent alone."""
        if token is None:
            token = controller.token(region=region, ring=ring, uses=1)
        self.state = StateDir(state_dir)
        done = enroll(self.state, controller.address, token, controller.data_dir / "ca.pem",
                      labels or {})  # fmt: skip
        self.host_id = done.host_id
        self.region, self.ring = region, ring
        self.backend = backend
        # Retries and verification attempts a second apart, not five.
        text = self.state.config_file.read_text()
        text = text.replace('retry_interval = "5s"', 'retry_interval = "1s"')
        if textfile is not None:
            text = text.replace('textfile = ""', f'textfile = "{textfile}"')
        if address is not None:
            text = text.replace(f'address = "{controller.address}"', f'address = "{address}"')
        self.state.config_file.write_text(text)
        self._open(backend, prober, agent_version, defer)

    @classmethod
    def reopen(cls, state_dir: Path, backend: FakeBackend, prober: FakeProber) -> InProcessAgent:
        """The agent of a state dir enrolled before (by another instance,
        closed since): as a service restarted, or on another thread."""
        agent = cls.__new__(cls)
        agent.state = StateDir(state_dir)
        agent.host_id = agent.state.host_id()
        agent.region, agent.ring = "", -1  # the controller's to say
        agent.backend = backend
        agent._open(backend, prober, None, False)
        return agent

    def _open(
        self, backend: FakeBackend, prober: FakeProber, agent_version: str | None, defer: bool
    ) -> None:
        machine = Machine(
            backend=lambda manager, config: backend,
            prober=lambda: prober,
            rebooter=lambda config: None,
            reboot_signals=lambda config, backend: list,
            livepatch=tuple,
            watchdog=lambda: None,
        )
        self.agent = Agent.open(self.state, machine=machine)
        config = self.agent.config
        self.journal = self.agent.journal
        assert self.agent.client is not None
        self.client = self.agent.client
        self.runner = self.agent.runner
        self.agent_version = agent_version
        self.checkins = CheckIns(
            config, self.journal, self.client, collect_facts=self._facts,
            take_inventory=lambda _: Inventory(
                sorted((n, v, "all") for n, v in backend.installed.items())
            ),
            on_keys=lambda answer: learn_announced(self.state, answer),
        )  # fmt: skip
        self.outcomes: list[State] = []
        self.defer = defer
        self._pending: str | None = None

    def _facts(self) -> hostfacts.HostFacts:
        facts = hostfacts.collect()
        if self.agent_version is None:
            return facts
        return dataclasses.replace(facts, agent_version=self.agent_version)

    def _run(self, order_id: str) -> State:
        final = self.runner.run(order_id)
        self.outcomes.append(final)
        return final

    def round(self) -> State | None:
        """One check-in; carry out the order it brings (or the one deferred
        from the last round), and report. Returns the outcome, if any."""
        final = None
        if self._pending is not None:
            final, self._pending = self._run(self._pending), None
        report = self.checkins.once()
        if report.work_order is not None:
            order = self.runner.receive(
                report.work_order, self.state.trusted_signing_keys(), self.host_id
            )
            if self.defer:
                self._pending = order.order_id
            else:
                final = self._run(order.order_id)
        self.agent.report()
        return final

    def close(self) -> None:
        self.agent.close()
