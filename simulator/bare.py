"""A bare grpc.aio server for `fleetpatch-sim load --bare`: the agents'
service with the controller's own TLS (its server certificate, client
certificates required and checked against its CA) and the same messages,
answering at once and storing nothing. The load tool's ratio to it is what
fleetpatch's own work costs.

    python -m simulator.bare --data-dir DIR [--listen 127.0.0.1:0] [--until-stdin-closes]

Prints the address it listens on, then serves until SIGTERM (or, with
--until-stdin-closes, until its standard input closes: `load` starts it
so, and a load killed outright leaves no server behind).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc
from google.protobuf.duration_pb2 import Duration

from controller.api.limits import PENDING_OPTIONS


class Bare(agent_pb2_grpc.AgentServiceServicer):
    async def CheckIn(
        self, request: agent_pb2.CheckInRequest, context: object
    ) -> agent_pb2.CheckInResponse:
        return agent_pb2.CheckInResponse(
            next_checkin=Duration(seconds=300),
            known_inventory_hash=request.inventory_hash,
            known_updates_hash=request.updates_hash,
        )

    async def ReportProgress(
        self, request: agent_pb2.ReportProgressRequest, context: object
    ) -> agent_pb2.ReportProgressResponse:
        return agent_pb2.ReportProgressResponse(
            acknowledged_keys=[r.idempotency_key for r in request.reports]
        )


async def serve(data_dir: Path, listen: str, until_stdin_closes: bool = False) -> None:
    # The controller's backlog of calls not yet taken up, so that a herd
    # meets the same gRPC core on both.
    server = grpc.aio.server(options=list(PENDING_OPTIONS))
    agent_pb2_grpc.add_AgentServiceServicer_to_server(Bare(), server)  # type: ignore[abstract]
    creds = grpc.ssl_server_credentials(
        [((data_dir / "server.key").read_bytes(), (data_dir / "server.pem").read_bytes())],
        root_certificates=(data_dir / "ca.pem").read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port(listen, creds)
    await server.start()
    print(f"{listen.rpartition(':')[0]}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if until_stdin_closes:
        stdin = sys.stdin.fileno()

        def closed() -> None:
            if not os.read(stdin, 4096):
                loop.remove_reader(stdin)
                stop.set()

        loop.add_reader(stdin, closed)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--until-stdin-closes", action="store_true")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.data_dir, args.listen, args.until_stdin_closes))
    except OSError as exc:
        print(f"bare server: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
