"""A real fleet on one machine: a controller, and agents each in its own
host sandbox (mount namespace, overlay of /, chroot) running the real
`fleetpatch-agent run` as a separate process, patching with real apt from
a local repository, reaching the controller through a relay the test can
cut (a network partition) and heal.

The demo package fp-demo: `fp-demo --check` is each host's health check
(agent.toml [[checks]]). Version 1.1 refuses to run on a host where
/etc/fp-demo/broken exists, so one host's update breaks it and reverts.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tests.support.controller import BIN, Controller
from tests.support.debrepo import DebFile, DebSpec, LocalAptRepo, dpkg_status, use_repo
from tests.support.sandbox import HostSandbox, SandboxProcess
from tests.support.waiting import wait_for

from .relay import Relay

STATE = "/var/lib/fleetpatch/agent"
AGENT = str(BIN / "fleetpatch-agent")
BROKEN_FLAG = "/etc/fp-demo/broken"


def fp_demo(version: str) -> DebSpec:
    """fp-demo VERSION; 1.1 fails its check where BROKEN_FLAG exists."""
    check = "exit 0"
    if version != "1.0":
        check = (
            f"if [ -e {BROKEN_FLAG} ]; then "
            f"echo 'fp-demo {version}: refusing to start' >&2; exit 1; fi"
        )
    script = f'#!/bin/sh\nif [ "$1" = --check ]; then {check}; fi\necho fp-demo {version}\n'
    return DebSpec("fp-demo", version, files={"/usr/bin/fp-demo": DebFile(script, 0o755)},
                   description="fleetpatch demo service")  # fmt: skip


CAMPAIGN = """\
[campaign]
name = "fp-demo-1-1"
description = "fp-demo 1.1 to every host, canaries first"

[patch]
packages = [{{ name = "fp-demo", min_version = "1.1" }}]

[verify]
timeout = "{verify}"

[rollout]
region_order = "parallel"
concurrency = "100%"
report_timeout = "{report_timeout}"
silent_after = "{silent_after}"
silent_threshold = "{silent_threshold}"
gate = {{ min_success = 1.0, failure_budget = 0 }}

[[rollout.rings]]
ring = 0

[[rollout.rings]]
ring = 1

[[rollout.rings]]
ring = 2
"""


def campaign_text(
    verify: str = "3s", report_timeout: str = "2m", silent_after: str = "10m",
    silent_threshold: str = "50%",
) -> str:  # fmt: skip
    return CAMPAIGN.format(
        verify=verify, report_timeout=report_timeout, silent_after=silent_after,
        silent_threshold=silent_threshold,
    )  # fmt: skip


@dataclass
class E2EHost:
    name: str
    region: str
    ring: int
    sandbox: HostSandbox
    relay: Relay
    log_path: Path
    host_id: str = ""
    process: SandboxProcess | None = None
    _log: IO[bytes] | None = None

    # -- the agent process ----------------------------------------------------

    def start_agent(self, env: dict[str, str] | None = None) -> None:
        self._log = self.log_path.open("ab")
        self.process = self.sandbox.spawn(
            [AGENT, "run", "--state-dir", STATE], stdout=self._log, stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip

    def stop_agent(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def kill_agent(self) -> int | None:
        return self.stop_agent(signal.SIGKILL)

    # -- the host --------------------------------------------------------------

    def break_it(self) -> None:
        """fp-demo 1.1 will refuse to start on this host."""
        self.sandbox.run(["mkdir", "-p", "/etc/fp-demo"])
        self.sandbox.run(["touch", BROKEN_FLAG])

    def installed(self) -> str | None:
        status = dpkg_status("fp-demo", self.sandbox)
        return status[1] if status and status[0] == "ii" else None

    def status(self) -> dict[str, Any]:
        done = self.sandbox.run([AGENT, "status", "--json", "--state-dir", STATE])
        doc: dict[str, Any] = json.loads(done.stdout)
        return doc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class E2EFleet:
    """The controller, the repository and the hosts; `close` stops it all."""

    def __init__(self, work: Path, checkin: str = "2s") -> None:
        self.work = work
        self.controller = Controller(work / "controller")
        self.controller.init(interval=checkin, console=True)
        config = self.controller.data_dir / "controller.toml"
        config.write_text(
            config.read_text()
            .replace('tick = "10s"', 'tick = "1s"')
            .replace("jitter = 0.2", "jitter = 0.1")
        )
        self.repo = LocalAptRepo(work / "repo")
        self.repo.add(fp_demo("1.0"), fp_demo("1.1"))
        self.hosts: list[E2EHost] = []
        self.controller.start()

    def add_host(self, name: str, region: str, ring: int) -> E2EHost:
        sandbox = HostSandbox(hostname=name, machine_id=f"{len(self.hosts) + 1:032x}").start()
        try:
            use_repo(sandbox, self.repo)
            sandbox.run(["apt-get", "install", "-y", "-q", "fp-demo=1.0"], timeout=300)
            relay = Relay(("127.0.0.1", self.controller.port))
            host = E2EHost(name, region, ring, sandbox, relay, self.work / f"{name}.log")
            self.hosts.append(host)
            self._enroll(host)
        except BaseException:
            sandbox.stop()
            raise
        return host

    def _enroll(self, host: E2EHost) -> None:
        ctl = self.controller
        token = ctl.token(region=host.region, ring=host.ring, uses=1, ttl="10m")
        host.sandbox.path("/root/controller-ca.pem").write_bytes(
            (ctl.data_dir / "ca.pem").read_bytes()
        )
        host.sandbox.run([
            AGENT, "enroll", "--controller", ctl.address, "--token", token,
            "--ca-cert", "/root/controller-ca.pem", "--state-dir", STATE,
            "--label", f"name={host.name}",
        ])  # fmt: skip
        config = host.sandbox.path(f"{STATE}/agent.toml")
        text = config.read_text().replace(
            f'address = "{ctl.address}"', f'address = "{host.relay.address}"'
        )
        text = text.replace('retry_interval = "5s"', 'retry_interval = "1s"')
        text += (
            '\n[[checks]]\nname = "fp-demo"\nkind = "command"\n'
            'argv = ["/usr/bin/fp-demo", "--check"]\n'
        )
        config.write_text(text)
        host.host_id = host.status()["host_id"]

    def start_agents(self) -> None:
        for host in self.hosts:
            host.start_agent()

    def create_campaign(self, text: str) -> str:
        path = self.work / "campaign.toml"
        path.write_text(text)
        return self.controller.admin("campaign", "create", path).stdout.strip().splitlines()[-1]

    def campaign(self, campaign_id: str) -> dict[str, Any]:
        doc = self.controller.admin_json("campaign", "show", campaign_id)
        assert isinstance(doc, dict)
        return doc

    def wait_for(
        self, campaign_id: str, states: tuple[str, ...], timeout: float = 180
    ) -> dict[str, Any]:
        return wait_for(
            f"campaign {campaign_id} is {' or '.join(states)}",
            lambda: self.campaign(campaign_id),
            lambda doc: doc["state"] in states,
            timeout=timeout,
            interval=0.5,
        )

    def close(self) -> None:
        errors: list[BaseException] = []
        for host in self.hosts:
            try:
                host.stop_agent()
            except BaseException as exc:  # stop them all, then report
                errors.append(exc)
            host.relay.close()
            host.sandbox.stop()
        self.controller.stop()
        if errors:
            raise errors[0]


@contextmanager
def fleet(work: Path, checkin: str = "2s") -> Iterator[E2EFleet]:
    built = E2EFleet(work, checkin)
    try:
        yield built
    finally:
        built.close()
