"""The metrics listener: plain HTTP on an address of its own, never the
gRPC ports (scrapers hold no client certificate, and a scrape must never
queue behind check-ins for a connection slot).

Off unless `[metrics] listen` is set; the documented value binds loopback
(README, "Metrics"): expose it further only behind a firewall rule or a
proxy that restricts who may scrape, since the figures describe the fleet.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from controller.datadir import join_address, split_address
from controller.errors import UsageError


@dataclass
class MetricsListener:
    address: str  # as bound (the real port when 0 was asked for); "": none
    _server: WSGIServer | None
    _thread: threading.Thread | None

    def close(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def listen(address: str, registry: CollectorRegistry) -> MetricsListener:
    """Serve ``registry`` at http://ADDRESS/metrics from a thread. Raises
    UsageError, one line, when the address cannot be bound (in use, or not
    an address of this host)."""
    host, port = split_address(address)
    try:
        server, thread = start_http_server(port, host, registry)
    except OSError as exc:
        raise UsageError(
            f"cannot listen for metrics on {address}: {exc.strerror or exc} "
            "(set [metrics] listen in controller.toml)"
        ) from None
    return MetricsListener(join_address(host, server.server_port), server, thread)
