"""A TCP proxy on loopback that can freeze: the connections through it stay
open and nothing moves, neither way. To the ends it is a server frozen
(SIGSTOP) or a network cut off without a reset, where the kernel still
acknowledges: the case no socket error ever ends, so only a timeout of
the caller's own can. `thaw` moves the bytes held, and the next, again."""

from __future__ import annotations

import contextlib
import socket
import threading

_CHUNK = 65536


class FreezingProxy:
    """Forwards 127.0.0.1:`port` to ``target``: a (host, port), or the path
    of a Unix socket (a PostgreSQL server listening on its socket only)."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._moving = threading.Event()
        self._moving.set()
        self._closed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name=f"proxy-{self.port}").start()

    def freeze(self) -> None:
        """Nothing moves from now on; bytes read meanwhile are held."""
        self._moving.clear()

    def thaw(self) -> None:
        self._moving.set()

    def close(self) -> None:
        self._closed = True
        self._moving.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in [self._listener, *sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> FreezingProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                if isinstance(self.target, str):
                    upstream = socket.socket(socket.AF_UNIX)
                    upstream.connect(self.target)
                else:
                    upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                self._moving.wait()
                data = source.recv(_CHUNK)
                if not data or self._closed:
                    break
                self._moving.wait()  # frozen while this was read: held until thawed
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
