"""Run one signed patch order through the agent's real parts on this host:
the Runner, the apt backend, the health prober, and the services wiring the
agent service uses (`agent.service.Machine().services`). The archive tests
run it inside a container booted under systemd
(tests/integration/test_archive_services.py) and read the JSON it prints.

    python -m tests.support.archive_drive STATE_DIR PACKAGE --restart auto|report
        [--unhealthy-from VERSION]

``--unhealthy-from``: the order's health check fails once PACKAGE is at
VERSION or above, so the update is reverted after it was applied.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.v1 import types_pb2

from agent.backends.apt import Apt
from agent.host.checks import Prober
from agent.orders.journal import Journal
from agent.orders.policy import Policy
from agent.orders.runner import Runner
from agent.service import Machine
from tests.support.orders import command_check, sign, trusted, work_order

HOST = "h-00000000000000ac"
RESTART = {"auto": types_pb2.RESTART_POLICY_AUTO, "report": types_pb2.RESTART_POLICY_REPORT}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("state", type=Path)
    parser.add_argument("package")
    parser.add_argument("--restart", choices=sorted(RESTART), default="auto")
    parser.add_argument("--unhealthy-from", default="")
    args = parser.parse_args(argv)
    args.state.mkdir(parents=True, exist_ok=True)
    checks = []
    if args.unhealthy_from:
        query = f"dpkg-query -W -f='${{Version}}' {args.package}"
        checks.append(command_check(
            ["sh", "-c", f'dpkg --compare-versions "$({query})" lt {args.unhealthy_from}'],
            name="below-the-update",
        ))  # fmt: skip
    journal = Journal.open(args.state / "journal.db")
    backend = Apt()
    services = Machine().services(backend)
    if services is None:
        print("no service manager: is systemd running here?", file=sys.stderr)
        return 2
    runner = Runner(
        journal, backend, Prober(), Policy(allow_order_commands=True), [], args.state / "cache",
        retry_interval=1, services=services,
    )  # fmt: skip
    key = Ed25519PrivateKey.generate()
    order = work_order(
        HOST, journal.highest_sequence() + 1, [(args.package, "")], checks=checks,
        verify_timeout=timedelta(seconds=3), restart_services=RESTART[args.restart],
    )  # fmt: skip
    received = runner.receive(sign(order, key), trusted(key), HOST)
    final = runner.run(received.order_id)
    record = journal.order(received.order_id)
    assert record is not None
    print(json.dumps({
        "final": final.value,
        "detail": record.detail,
        "steps": [[s.state, s.detail] for s in journal.steps(received.order_id)],
        "restarts": {
            phase: [[r.unit, r.result] for r in journal.restarts(received.order_id, phase)]
            for phase in ("apply", "revert")
        },
    }))  # fmt: skip
    journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
