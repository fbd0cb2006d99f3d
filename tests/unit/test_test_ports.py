"""The tests' listening ports (tests/support/controller.py): outside the
kernel's ephemeral range and never the same for two pytest-xdist workers,
so that parallel tests and outgoing connections cannot take a controller's
port between its pick and its bind."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.controller import _port_block, free_port


def _blocks(monkeypatch, workers: int) -> list[range]:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(workers))
    found = []
    for n in range(workers):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{n}")
        found.append(_port_block())
    return found


def test_workers_pick_from_blocks_apart_and_outside_the_ephemeral_range(monkeypatch):
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    blocks = _blocks(monkeypatch, 4)
    ports = [{p for port in block for p in (port, port + 1)} for block in blocks]
    assert all(len(p) > 1000 for p in ports)
    for n, mine in enumerate(ports):
        assert not any(low <= p <= high for p in mine)
        assert all(mine.isdisjoint(other) for other in ports[n + 1 :])


def test_a_free_port_and_the_next_are_free_and_in_this_worker_block(monkeypatch):
    (first, second) = _blocks(monkeypatch, 2)  # this process is now worker gw1 of 2
    picked = {free_port() for _ in range(20)}
    assert len(picked) == 20  # each pick moves on
    assert picked <= set(second)
    port = free_port()
    for each in (port, port + 1):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", each))  # free: raises otherwise
    assert port not in first
