"""A real notification receiver for tests: an HTTP server on 127.0.0.1 in a thread.

Paths choose the behaviour: ``/hang...`` never answers (until the server stops),
``/fail...`` answers 500, ``/status/NNN`` answers NNN, ``/flaky/N/...`` fails the first N
requests, ``/slow/MS/...`` answers 204 after MS milliseconds, ``/hang-until/T/...`` holds
every request that arrives before the Unix time T and drops its connection unanswered at T,
``/fail-until/T/...`` answers 500 before T, ``/held/...`` holds every request until the test
calls ``release()`` and then answers 204 (unanswered if the server stops first), anything
else answers 204 (the two ``-until`` forms too, from T on). Every request is recorded, in
arrival order, with the status it got (None: unanswered).
"""

from __future__ import annotations

import json
import sys
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
    status: int | None = None  # what the receiver answered; None while or if unanswered

    def json(self) -> Any:
        return json.loads(self.body)


#: seconds a test waits for what must happen: long, as only what never happens uses it up
WAIT = 60.0


def entity_ids(requests: list[Received]) -> set[str]:
    """The ids of the entities that notifications ``requests`` carried."""
    return {e["id"] for r in requests for e in r.json()["data"]}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A sender that went away (a broker killed mid-request) is no error of ours."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.received: list[Received] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._release = threading.Event()  # set by release() and by stop()
        self._counts: dict[str, int] = {}
        self.httpd = _Server(("127.0.0.1", port), self._handler())
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
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def release(self) -> None:
        """Answer the ``/held`` requests held so far, and those to come at once."""
        self._release.set()

    def _status(self, path: str) -> int | None:
        parts = path.strip("/").split("/")
        if parts[0] == "held":
            self._release.wait()
            return None if self._stop.is_set() else 204
        if parts[0] in ("hang-until", "fail-until") and len(parts) > 1:
            left = float(parts[1]) - time.time()
            if left <= 0:
                return 204
            if parts[0] == "fail-until":
                return 500
            self._stop.wait(left)
            return None
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
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                item = Received(self.path, dict(self.headers.items()), body, time.time())
                with receiver._cond:
                    receiver.received.append(item)
                    receiver._cond.notify_all()
                if len(body) < length:  # the sender went away (was killed) mid-request
                    self.close_connection = True
                    return
                status = item.status = receiver._status(self.path)
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

    def answered(self, prefix: str) -> list[Received]:
        """The requests to paths starting with ``prefix`` that got a 2xx answer."""
        return [r for r in self.on(prefix) if r.status is not None and 200 <= r.status < 300]

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
