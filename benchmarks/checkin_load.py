"""Check-in throughput of a real controller: real mutual TLS on loopback,
real SQLite, every check-in persisted before it is answered.

Enrolls N hosts (each with its own key and certificate), then has them
check in as fast as the controller answers, hash-only as a steady fleet
does, and prints check-ins per second and latency. It runs twice in the
same session: with group commit (the default) and with it off
(checkin.max_batch = 1, one transaction per check-in) as the baseline.

    .venv/bin/python benchmarks/checkin_load.py [--hosts 400] [--seconds 10] [--concurrency 64]
        [--store-url postgresql://...]

``--store-url`` runs the controller on that PostgreSQL database ([store]
url) instead of SQLite; both runs add their hosts to it.

On a 2-core machine the load generator shares the cores with the
controller, so the figures are a floor for a controller on its own box.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fleetpatch.inventory import inventory_hash
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc, types_pb2

from benchmarks.options import at_least, seconds

BIN = Path(sys.executable).parent
PACKAGES = [(f"pkg{i}", f"1.{i}", "amd64") for i in range(300)]


def init_controller(data: Path, port: int, interval: str = "5m") -> None:
    """`controller init` of a data dir listening on loopback ``port``."""
    subprocess.run(
        [str(BIN / "fleetpatch"), "controller", "init", "--data-dir", str(data), "--hostname",
         "localhost", "--listen", f"127.0.0.1:{port}", "--checkin-interval", interval],
        check=True, capture_output=True,
    )  # fmt: skip


def set_store(data: Path, url: str) -> None:
    """Point the controller.toml of ``data`` at the store ``url``."""
    config = data / "controller.toml"
    text = config.read_text()
    if '\nurl = ""\n' not in text:
        raise SystemExit("benchmarks: the controller.toml template's [store] url moved")
    config.write_text(text.replace('\nurl = ""\n', f"\nurl = {json.dumps(url)}\n", 1))


def start_controller(
    data: Path, port: int, max_batch: int, store_url: str = ""
) -> subprocess.Popen[bytes]:
    init_controller(data, port)
    config = data / "controller.toml"
    config.write_text(config.read_text().replace("max_batch = 1000", f"max_batch = {max_batch}"))
    if store_url:
        set_store(data, store_url)
    return serve(data, timeout=20)


def serve(data: Path, timeout: float) -> subprocess.Popen[bytes]:
    """`controller serve` on an initialised data dir, once it listens (its
    endpoints.json names this process); exits when it does not start."""
    proc = subprocess.Popen(
        [str(BIN / "fleetpatch"), "controller", "serve", "--data-dir", str(data),
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads((data / "endpoints.json").read_text())["pid"] == proc.pid:
                return proc
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the controller did not start on {data}")


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """SIGTERM, as systemd stops the service; killed when it takes a minute."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def enroll_all(data: Path, port: int, hosts: int) -> list[tuple[bytes, bytes]]:
    token = subprocess.run(
        [str(BIN / "fleetpatch"), "token", "create", "--data-dir", str(data), "--region", "eu",
         "--ring", "0", "--uses", str(hosts), "--ttl", "1h"],
        check=True, capture_output=True, text=True,
    ).stdout.split()[-1]  # fmt: skip
    ca = (data / "ca.pem").read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=ca)
    identities = []
    with grpc.secure_channel(f"127.0.0.1:{port + 1}", creds) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        for _ in range(hosts):
            key = ec.generate_private_key(ec.SECP256R1())
            csr = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")]))
                .sign(key, hashes.SHA256())
            )
            reply = stub.Enroll(agent_pb2.EnrollRequest(
                token=token, csr_pem=csr.public_bytes(serialization.Encoding.PEM),
            ), timeout=30)  # fmt: skip
            key_pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )  # fmt: skip
            identities.append((key_pem, bytes(reply.certificate_pem)))
    return identities


def host_channel(port: int, ca: bytes, identity: tuple[bytes, bytes]) -> grpc.aio.Channel:
    """An asyncio channel to the mutual-TLS port as the host ``identity`` (key, cert)."""
    key, cert = identity
    return grpc.aio.secure_channel(
        f"127.0.0.1:{port}",
        grpc.ssl_channel_credentials(ca, private_key=key, certificate_chain=cert),
        options=[("grpc.max_send_message_length", 64 * 1024 * 1024)],
    )


async def load(
    port: int, ca: bytes, identities: list[tuple[bytes, bytes]], seconds: float, concurrency: int
) -> tuple[int, list[float]]:
    channels = [host_channel(port, ca, identity) for identity in identities]
    stubs = [agent_pb2_grpc.AgentServiceStub(c) for c in channels]
    digest = inventory_hash(PACKAGES)
    full = agent_pb2.CheckInRequest(
        facts=types_pb2.HostFacts(hostname="bench", os_id="debian"),
        inventory_hash=digest,
        inventory=types_pb2.Inventory(
            packages=[types_pb2.Package(name=n, version=v, arch=a) for n, v, a in PACKAGES]
        ),
    )
    steady = agent_pb2.CheckInRequest(facts=full.facts, inventory_hash=digest)
    await asyncio.gather(*(stub.CheckIn(full, timeout=60) for stub in stubs))  # first contact

    latencies: list[float] = []
    done = 0
    stop_at = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        # Each worker has hosts of its own: a host is served one check-in
        # at a time, as a real agent makes them.
        nonlocal done
        mine, i = stubs[offset::concurrency], 0
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            await mine[i % len(mine)].CheckIn(steady, timeout=60)
            latencies.append(time.perf_counter() - started)
            done += 1
            i += 1

    await asyncio.gather(*(worker(k) for k in range(min(concurrency, len(stubs)))))
    for channel in channels:
        await channel.close(None)
    return done, latencies


def run(max_batch: int, args: argparse.Namespace) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(prefix="fleetpatch-bench-") as tmp:
        data = Path(tmp) / "ctl"
        port = 20000 + os.getpid() % 20000 + max_batch % 7 * 2
        proc = start_controller(data, port, max_batch, args.store_url)
        try:
            identities = enroll_all(data, port, args.hosts)
            done, lat = asyncio.run(
                load(
                    port, (data / "ca.pem").read_bytes(), identities, args.seconds, args.concurrency
                )
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    lat.sort()
    return done / args.seconds, statistics.median(lat) * 1000, lat[int(len(lat) * 0.99)] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=at_least(1), default=400)
    parser.add_argument("--seconds", type=seconds(), default=10.0)
    parser.add_argument("--concurrency", type=at_least(1), default=64)
    parser.add_argument("--store-url", default="", help="a PostgreSQL URL ([store] url)")
    args = parser.parse_args()
    print(f"{args.hosts} hosts, {args.concurrency} concurrent check-ins, {args.seconds:.0f}s each",
          file=sys.stderr)  # fmt: skip
    rows = []
    for label, batch in (("group commit (max_batch 1000)", 1000), ("baseline (max_batch 1)", 1)):
        rate, p50, p99 = run(batch, args)
        rows.append((label, rate, p50, p99))
        print(f"  {label}: {rate:,.0f} check-ins/s", file=sys.stderr)
    print(f"{'mode':32} {'check-ins/s':>12} {'p50 ms':>8} {'p99 ms':>8}")
    for label, rate, p50, p99 in rows:
        print(f"{label:32} {rate:12,.0f} {p50:8.1f} {p99:8.1f}")
    print(f"group commit / baseline: {rows[0][1] / rows[1][1]:.2f}x")


if __name__ == "__main__":
    main()
