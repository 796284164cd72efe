"""A real context source for tests: an HTTP server on 127.0.0.1 in a thread that records
every request (any method) and answers by rule.

``answer(method, path_prefix, status, body)`` sets what requests of that method whose path
starts with the prefix get (the longest prefix wins); anything else gets 204 with no body.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


class ContextSource:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._rules: dict[tuple[str, str], tuple[int, Any]] = {}
        self._lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), self._handler())
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ContextSource:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(self, method: str, prefix: str, status: int, body: Any = None) -> None:
        with self._lock:
            self._rules[(method, prefix)] = (status, body)

    def on(self, method: str, prefix: str = "") -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    def _rule(self, method: str, path: str) -> tuple[int, Any]:
        with self._lock:
            found = [(len(p), rule) for (m, p), rule in self._rules.items()
                     if m == method and path.startswith(p)]
        return max(found, key=lambda f: f[0])[1] if found else (204, None)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        source = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                with source._lock:
                    source.requests.append(Request(
                        self.command, url.path, parse_qsl(url.query),
                        dict(self.headers.items()), body))
                status, answer = source._rule(self.command, url.path)
                payload = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if payload:
                    self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        return Handler
