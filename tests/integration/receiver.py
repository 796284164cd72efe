"""A real notification receiver for tests: an HTTP server on 127.0.0.1 in a thread.

Paths choose the behaviour: ``/hang...`` never answers (until the server stops),
``/fail...`` answers 500, ``/status/NNN`` answers NNN, ``/flaky/N/...`` fails the first N
requests, ``/slow/MS/...`` answers 204 after MS milliseconds, anything else answers 204. Every request is recorded, in arrival order.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.received: list[Received] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._counts: dict[str, int] = {}
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _status(self, path: str) -> int | None:
        parts = path.strip("/").split("/")
        if parts[0].startswith("hang"):
            self._stop.wait(120)
            return None
        if parts[0].startswith("fail"):
            return 500
        if parts[0] == "status" and len(parts) > 1:
            return int(parts[1])
        if parts[0] == "slow" and len(parts) > 1:
            time.sleep(int(parts[1]) / 1000)
            return 204
        if parts[0] == "flaky" and len(parts) > 1:
            with self._cond:
                seen = self._counts[path] = self._counts.get(path, 0) + 1
            return 503 if seen <= int(parts[1]) else 204
        return 204

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                item = Received(self.path, dict(self.headers.items()), body, time.time())
                with receiver._cond:
                    receiver.received.append(item)
                    receiver._cond.notify_all()
                status = receiver._status(self.path)
                if status is None:
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        return Handler

    def on(self, prefix: str) -> list[Received]:
        with self._cond:
            return [r for r in self.received if r.path.startswith(prefix)]

    def wait(self, prefix: str, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """The requests to paths starting with ``prefix`` once there are ``count`` of them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self.received if r.path.startswith(prefix)]
                left = deadline - time.monotonic()
                if len(got) >= count or left <= 0:
                    return got
                self._cond.wait(left)

    async def await_(self, prefix: str, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """``wait`` without blocking the event loop."""
        import asyncio

        return await asyncio.to_thread(self.wait, prefix, count, timeout)
