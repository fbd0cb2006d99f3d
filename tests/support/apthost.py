"""A sandboxed host with a real, enrolled fleetpatch agent and the
fp-demo package, for tests of the agent against real apt and dpkg."""

from __future__ import annotations

import json
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.identity import identity_from_certificate
from fleetpatch.v1 import types_pb2

from tests.support.controller import BIN, Controller
from tests.support.debrepo import DebFile, DebSpec, LocalAptRepo, build_deb, dpkg_status
from tests.support.orders import sign, work_order
from tests.support.sandbox import HostSandbox

STATE = "/var/lib/fleetpatch/agent"
AGENT = str(BIN / "fleetpatch-agent")


def demo(version: str, *, healthy: bool = True, postinst_fails: bool = False) -> DebSpec:
    """fp-demo: `fp-demo --check` is the host's health check."""
    check = "exit 0" if healthy else "echo 'fp-demo: config broken' >&2; exit 1"
    script = f'#!/bin/sh\nif [ "$1" = --check ]; then {check}; fi\necho fp-demo {version}\n'
    scripts = (
        {"postinst": "#!/bin/sh\necho 'postinst: broken' >&2\nexit 1\n"} if postinst_fails else {}
    )
    return DebSpec(
        "fp-demo", version, files={"/usr/bin/fp-demo": DebFile(script, 0o755)}, scripts=scripts
    )


class AptHost:
    """One sandboxed host with an enrolled agent."""

    def __init__(self, sandbox: HostSandbox, controller: Controller, repo: LocalAptRepo) -> None:
        self.sandbox = sandbox
        self.controller = controller
        self.repo = repo
        self.sequence = 0
        key = serialization.load_pem_private_key(
            (controller.data_dir / "signing.key").read_bytes(), password=None
        )
        assert isinstance(key, Ed25519PrivateKey)
        self.key = key

    def enroll(self) -> None:
        token = self.controller.token()
        ca = self.sandbox.path("/root/controller-ca.pem")
        ca.write_bytes((self.controller.data_dir / "ca.pem").read_bytes())
        self.sandbox.run([
            AGENT, "enroll", "--controller", self.controller.address, "--token", token,
            "--ca-cert", "/root/controller-ca.pem", "--state-dir", STATE,
        ])  # fmt: skip
        config = self.sandbox.path(f"{STATE}/agent.toml")
        text = config.read_text()
        text = text.replace('lock_timeout = "60s"', 'lock_timeout = "1s"')
        text = text.replace('busy_timeout = "10m"', 'busy_timeout = "10s"')
        text = text.replace('retry_interval = "5s"', 'retry_interval = "1s"')
        text += (
            '\n[[checks]]\nname = "fp-demo"\nkind = "command"\n'
            'argv = ["/usr/bin/fp-demo", "--check"]\n'
        )
        config.write_text(text)
        assert tomllib.loads(text)["checks"][0]["name"] == "fp-demo"

    @property
    def host_id(self) -> str:

        cert = x509.load_pem_x509_certificate(self.sandbox.path(f"{STATE}/cert.pem").read_bytes())
        identity = identity_from_certificate(cert)
        assert identity is not None
        return identity.name

    def order(self, packages=(("fp-demo", ""),), **kwargs) -> types_pb2.WorkOrder:
        self.sequence += 1
        kwargs.setdefault("verify_timeout", timedelta(seconds=3))
        return work_order(self.host_id, self.sequence, packages, **kwargs)

    def apply(
        self, order: types_pb2.WorkOrder, env: dict[str, str] | None = None, timeout: float = 300
    ):
        path = f"/root/{order.order_id}.order"
        self.sandbox.path(path).write_bytes(sign(order, self.key).SerializeToString())
        return self.sandbox.run(
            [AGENT, "apply", path, "--state-dir", STATE], check=False, env=env, timeout=timeout
        )

    def status(self) -> dict[str, Any]:
        done = self.sandbox.run([AGENT, "status", "--json", "--state-dir", STATE])
        doc: dict[str, Any] = json.loads(done.stdout)
        return doc

    def installed(self) -> tuple[str, str] | None:
        return dpkg_status("fp-demo", self.sandbox)

    def install_from_file(self, spec: DebSpec, tmp: Path) -> None:
        """Install a version that no repository carries (dpkg -i of a file)."""
        deb = build_deb(spec, tmp / "offline-debs")
        inside = f"/root/{deb.name}"
        self.sandbox.path(inside).write_bytes(deb.read_bytes())
        self.sandbox.run(["dpkg", "-i", inside])
        self.sandbox.run(["rm", "-f", inside])
