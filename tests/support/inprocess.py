"""Agents driven in-process against a real controller over real mTLS: real
enrollment, journal, runner, check-ins and reports; only the package
manager and health checks are stand-ins (tests.support.fakes). Many of them
fit in one test process, to run whole campaigns quickly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agent.host import facts as hostfacts
from agent.link import reporting
from agent.link.checkin import CheckIns
from agent.link.client import ControllerClient
from agent.link.enrollment import enroll
from agent.link.keys import learn as learn_keys
from agent.orders.journal import Journal
from agent.orders.runner import Runner
from agent.orders.states import State
from agent.statedir import StateDir
from tests.support.controller import Controller
from tests.support.fakes import FakeBackend, FakeProber


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
    ) -> None:
        """``defer``: carry out an order at the next round rather than at
        once, so that it stays in flight on the controller meanwhile.
        ``agent_version``: what the agent reports (default: this one's);
        settable between rounds."""
        token = controller.token(region=region, ring=ring, uses=1)
        self.state = StateDir(state_dir)
        done = enroll(self.state, controller.address, token, controller.data_dir / "ca.pem",
                      labels or {})  # fmt: skip
        self.host_id = done.host_id
        self.region, self.ring = region, ring
        self.backend = backend
        config = self.state.config()
        self.journal = Journal.open(self.state.journal)
        self.client = ControllerClient(
            config.controller, self.state.read(self.state.ca), self.state.read(self.state.key),
            self.state.read(self.state.cert),
        )  # fmt: skip
        self.runner = Runner(
            self.journal, backend, prober, config.policy, [], self.state.cache,
            retry_interval=0.05,
        )  # fmt: skip
        self.agent_version = agent_version
        self.checkins = CheckIns(
            config, self.journal, self.client, collect_facts=self._facts,
            list_packages=lambda _: sorted((n, v, "all") for n, v in backend.installed.items()),
            on_keys=lambda keys: learn_keys(self.state, keys),
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
        reporting.flush(self.journal, self.client)
        return final

    def close(self) -> None:
        self.client.close()
        self.journal.close()
