"""A TCP relay between one agent and the controller, so a test can cut a
host's network (a partition) and heal it. From the agent's point of view
it is a link going down: open connections are reset and new ones refused.
Loopback only."""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends RST


class Relay:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"relay-{self.port}")
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        """The link goes down (the relay thread resets what is open)."""
        self._cut.set()

    def heal(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, None)
        try:
            while not self._stop.is_set():
                if self._cut.is_set() and self._pairs:
                    self._reset_all(sel)
                for key, _ in sel.select(timeout=0.1):
                    if key.data is None:
                        self._accept(sel)
                    else:
                        self._pump(sel, key.fileobj, key.data)  # type: ignore[arg-type]
        finally:
            self._reset_all(sel)
            sel.close()

    def _reset_all(self, sel: selectors.BaseSelector) -> None:
        for pair in self._pairs:
            self._drop(sel, *pair)
        self._pairs.clear()

    @staticmethod
    def _drop(sel: selectors.BaseSelector, *socks: socket.socket) -> None:
        for s in socks:
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(s)
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        client, _ = self._listener.accept()
        if self._cut.is_set():
            self._drop(sel, client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            self._drop(sel, client)
            return
        self._pairs.append((client, upstream))
        sel.register(client, selectors.EVENT_READ, upstream)
        sel.register(upstream, selectors.EVENT_READ, client)

    def _pump(
        self, sel: selectors.BaseSelector, source: socket.socket, sink: socket.socket
    ) -> None:
        try:
            data = source.recv(65536)
            if data:
                sink.sendall(data)
                return
        except OSError:
            pass
        self._pairs = [p for p in self._pairs if source not in p]
        self._drop(sel, source, sink)
