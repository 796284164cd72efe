"""Prometheus metrics: requests by route and status, latencies, store timings, and the
notification outbox's dead letters (read from the store when /metrics is scraped)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "urbanos_http_requests_total", "HTTP requests", ["method", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "urbanos_http_request_seconds", "HTTP request latency", ["method", "route"],
    registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
STORE = Histogram(
    "urbanos_store_seconds", "Store operation latency", ["op"], registry=REGISTRY,
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
)

DEAD_LETTERS = Gauge(
    "urbanos_notification_dead_letters",
    "Dead letters by kind: matching (a change whose matching failed, retried with backoff),"
    " delivery (a notification not delivered, waiting for an operator)",
    ["kind"],
    registry=REGISTRY,
)


class Instrument:
    """Counts and times every request by its route template (never by raw path).

    The labelled children are kept by their labels: ``.labels()`` validates and locks on
    every call, a dict lookup does not. There are as many keys as children in the registry.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.counters: dict[tuple[str, str, int], Any] = {}
        self.timers: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            method = scope["method"]
            template = getattr(scope.get("route"), "path", "unmatched")
            counter = self.counters.get((method, template, status))
            if counter is None:
                counter = REQUESTS.labels(method, template, str(status))
                self.counters[method, template, status] = counter
            counter.inc()
            timer = self.timers.get((method, template))
            if timer is None:
                timer = self.timers[method, template] = LATENCY.labels(method, template)
            timer.observe(elapsed)
