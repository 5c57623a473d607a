"""A loopback HTTP server that answers badly on purpose, on raw sockets so that it counts
the bytes it manages to send. The first path segment chooses the behaviour:

- ``/dribble/...``: a 200 without a length, then 12 bytes (spaces) every ``every_s``
  until the client goes away or ``dribble_for_s`` has passed;
- ``/huge/...``: a 200 without a length, then ``huge_bytes`` of JSON-ish padding in
  64 KiB writes, until the client goes away;
- ``/lists/search``: a well-behaved SearXNG answer whose one result is ``/dribble/listed``.

Each request's handler thread sets ``done`` when it ends, so a test waits (bounded) for
the count to settle."""

from __future__ import annotations

import json
import socket
import threading
import time
from types import TracebackType

CHUNK = 64 * 1024


class Misbehaving:
    def __init__(
        self, *, every_s: float = 0.2, dribble_for_s: float = 60.0, huge_bytes: int = 100 << 20
    ) -> None:
        self.every_s = every_s
        self.dribble_for_s = dribble_for_s
        self.huge_bytes = huge_bytes
        self.sent: dict[str, int] = {}  # bytes of body sent, by request path
        self.done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Misbehaving:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(5)

    def settled(self, path: str, timeout: float = 30.0) -> int:
        """Bytes sent for ``path`` once its handler has ended (bounded wait)."""
        deadline = time.monotonic() + timeout
        while path not in self.done and time.monotonic() < deadline:
            self._stop.wait(0.01)
        event = self.done.get(path)
        assert event is not None, f"no request for {path}"
        assert event.wait(max(0.0, deadline - time.monotonic())), f"{path} did not end"
        return self.sent[path]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                part = conn.recv(4096)
                if not part:
                    return
                head += part
            path = head.split(b" ", 2)[1].decode().split("?", 1)[0]
            with self._lock:
                self.sent[path] = 0
                self.done[path] = threading.Event()
            try:
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\n\r\n"
                )
                if path.startswith("/dribble"):
                    self._dribble(conn, path)
                elif path.startswith("/huge"):
                    self._huge(conn, path)
                elif path.startswith("/lists"):
                    listed = {"results": [{"url": f"{self.base}/dribble/listed", "title": "x"}]}
                    conn.sendall(json.dumps(listed).encode())
            except OSError:
                pass  # the client went away: what it cost is in self.sent
            finally:
                self.done[path].set()

    def _dribble(self, conn: socket.socket, path: str) -> None:
        until = time.monotonic() + self.dribble_for_s
        while time.monotonic() < until:
            conn.sendall(b" " * 12)
            self.sent[path] += 12
            if self._stop.wait(self.every_s):
                return

    def _huge(self, conn: socket.socket, path: str) -> None:
        conn.sendall(b'{"results": [], "pad": "')
        block = b"x" * CHUNK
        while self.sent[path] < self.huge_bytes:
            conn.sendall(block)
            self.sent[path] += CHUNK
        conn.sendall(b'"}')
