"""A stand-in for the history API on 127.0.0.1: answers ``GET /events`` with the NDJSON
lines and headers a test gives it, and records every request it receives (its path and
headers, the ``Authorization`` a client sent included)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

Answer = Callable[[dict[str, list[str]]], tuple[list[bytes], dict[str, str]]]


@dataclass
class Received:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


@dataclass
class HistoryStub:
    """``answer(query)`` gives the lines and extra headers of each answer."""

    answer: Answer = field(default=lambda _query: ([], {}))
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                stub.requests.append(Received(url.path, query, dict(self.headers.items())))
                lines, headers = stub.answer(query)
                body = b"".join(line + b"\n" for line in lines)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HistoryStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
