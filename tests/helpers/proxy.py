"""A TCP proxy for fault tests: forwards to the broker, and can cut or black-hole the path.

``cut()`` closes every connection (both ends see it at once). ``blackhole()`` stops
forwarding without closing anything, like a dead network path: bytes are read and dropped,
new connections are accepted but never reach the broker, so the client only notices
through its keepalive. ``restore()`` forwards new connections again; black-holed ones stay
dead, as they would after a real outage. ``cut_after(n)`` passes the next ``n`` bytes the target
sends, then cuts: a broker that dies after acknowledging part of what it was sent.
"""

from __future__ import annotations

import selectors
import socket
import threading

from devkit.net import free_port


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket | None) -> None:
        self.client = client
        self.upstream = upstream
        self.dead = upstream is None

    def peer(self, sock: socket.socket) -> socket.socket | None:
        return self.upstream if sock is self.client else self.client


class Proxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._blackholed = False
        self._cut_after: int | None = None
        self._running = True
        self.accepted = 0
        self._thread = threading.Thread(target=self._run, name="proxy", daemon=True)
        self._thread.start()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- controls (any thread) ---------------------------------------------------------

    def cut(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
            for pair in pairs:
                self._close_pair(pair)

    def blackhole(self) -> None:
        with self._lock:
            self._blackholed = True
            for pair in self._pairs:
                pair.dead = True

    def cut_after(self, target_bytes: int) -> None:
        with self._lock:
            self._cut_after = target_bytes

    def restore(self) -> None:
        with self._lock:
            self._blackholed = False

    def close(self) -> None:
        if not self._running:
            return
        self._running = False
        self._wake_w.send(b"x")
        self._thread.join(5)
        self.cut()
        self._selector.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the forwarding thread -----------------------------------------------------------

    def _close_pair(self, pair: _Pair) -> None:
        for sock in (pair.client, pair.upstream):
            if sock is None:
                continue
            try:
                self._selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        self.accepted += 1
        upstream = None
        if not self._blackholed:
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                return
        pair = _Pair(client, upstream)
        self._pairs.append(pair)
        for sock in (client, upstream):
            if sock is not None:
                sock.setblocking(True)
                self._selector.register(sock, selectors.EVENT_READ, pair)

    def _run(self) -> None:
        while self._running:
            events = self._selector.select(timeout=0.5)
            with self._lock:
                for key, _ in events:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self._listener:
                        self._accept()
                    elif key.data is not None:
                        self._forward(sock, key.data)

    def _forward(self, sock: socket.socket, pair: _Pair) -> None:
        if pair not in self._pairs:
            return
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if pair.dead:
            if not data:  # the FIN is lost too: the other end is not told
                self._selector.unregister(sock)
                sock.close()
                if sock is pair.client:
                    pair.client = _closed_socket()
                else:
                    pair.upstream = None
            return
        peer = pair.peer(sock)
        if not data or peer is None:
            self._pairs.remove(pair)
            self._close_pair(pair)
            return
        if self._cut_after is not None and sock is pair.upstream:
            if len(data) >= self._cut_after:
                data, self._cut_after = data[: self._cut_after], None
                try:
                    peer.sendall(data)
                finally:
                    self._pairs.remove(pair)
                    self._close_pair(pair)
                return
            self._cut_after -= len(data)
        try:
            peer.sendall(data)
        except OSError:
            self._pairs.remove(pair)
            self._close_pair(pair)


def _closed_socket() -> socket.socket:
    sock = socket.socket()
    sock.close()
    return sock
