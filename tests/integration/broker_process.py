"""A broker as a real process (``python -m urbanos.cli serve``): start, kill -9, start again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    """``python -m urbanos.cli serve`` on a store URL; start, kill -9, start again."""

    store: str
    log: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    proc: subprocess.Popen[bytes] | None = None
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ngsi-ld/v1/"

    def start(self, timeout: float = 20) -> None:
        """Start the process; return once it answers /health (within ``timeout`` seconds)."""
        out = open(self.log, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "urbanos.cli", "serve", "--port", str(self.port),
             "--store", self.store, "--log-level", "warning"],
            env=self.env, stdout=out, stderr=out,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)
        raise AssertionError("the broker did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.client.close()  # its kept-alive connections died with the process
        self.client = httpx.Client(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return self.client.request(method, self.url + path, json=body)


def subscription(sid: str, uri: str) -> dict[str, Any]:
    """A subscription to every Lamp, notified as plain JSON at ``uri``."""
    return {"id": sid, "type": "Subscription", "entities": [{"type": "Lamp"}],
            "notification": {"endpoint": {"uri": uri, "accept": "application/json"}}}


def lamp(n: int) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Lamp:{n}", "type": "Lamp",
            "level": {"type": "Property", "value": n}}
