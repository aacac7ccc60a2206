"""A TCP proxy on 127.0.0.1 that a test can freeze, cut and restore, to play a hung or gone server."""

from __future__ import annotations

import contextlib
import socket
import threading


class FaultProxy:
    """Forwards connections on a free port of 127.0.0.1 to `target` (host, port).

    `mode` is `"forward"` (pass bytes both ways), `"freeze"` (accept, then never answer: a hung
    server; open connections stop too) or `"cut"` (close every connection at once: a gone
    server). Use as a context manager; it stops by itself on exit.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.mode = "forward"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        self._thread.join()
        self._listener.close()
        self._close_all()

    def restore(self) -> None:
        """Forward again; connections opened while frozen are closed."""
        self._close_all()
        self.mode = "forward"

    def _close_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()

    def _keep(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._sockets.extend(sockets)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            if self.mode == "cut":
                client.close()
            elif self.mode == "freeze":
                self._keep(client)
            else:
                upstream = socket.create_connection(self.target)
                self._keep(client, upstream)
                for source, sink in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.mode == "cut":
                    break
                while self.mode == "freeze" and not self._stopped.is_set():
                    self._stopped.wait(0.1)  # hold the bytes: the peer waits for an answer that never comes
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
