"""Background tasks that live as long as the app: supervised, stopped gracefully.

:class:`Workers` runs named loops; a loop that crashes is logged and restarted after a
growing pause (so a bug or an unreachable database does not spin), and ``stop`` cancels
them and then runs the shutdown steps (the notification engine lets sends in progress
finish). :func:`start_workers` wires what the app needs: the delivery engine on the
store's notification outbox, and its HTTP/MQTT senders.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from urbanos.errors import ServiceUnavailable
from urbanos.outbound import OutboundPolicy
from urbanos.services.notifications import DeliveryConfig, NotificationEngine, SubscriptionSource
from urbanos.services.senders import HttpSender, MqttSender, SelfAddress, Senders
from urbanos.storage.outbox import Outbox

if TYPE_CHECKING:
    from urbanos.settings import Settings

log = logging.getLogger("urbanos.workers")


@dataclass
class Workers:
    """Supervised loops plus the steps that shut them down, in order."""

    restart_min: float = 0.5
    restart_max: float = 30.0
    _loops: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    engine: NotificationEngine | None = None
    outbox: Outbox | None = None

    def add(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        self._loops[name] = loop

    def on_stop(self, closer: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(closer)

    def start(self) -> None:
        for name, loop in self._loops.items():
            if name not in self._tasks:
                self._tasks[name] = asyncio.create_task(self._supervise(name, loop), name=name)

    def run(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Add one more supervised loop and start it now."""
        self.add(name, loop)
        self.start()

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        pause = self.restart_min
        while True:
            started = time.monotonic()
            try:
                await loop()
                log.warning("worker %s returned; restarting", name)
            except asyncio.CancelledError:
                raise
            except ServiceUnavailable as exc:  # an outage, already logged by the store
                log.warning("worker %s paused: %s; restarting in %.1fs", name, exc.detail, pause)
            except Exception:  # noqa: BLE001 - supervised: log and restart
                log.exception("worker %s crashed; restarting in %.1fs", name, pause)
            if time.monotonic() - started > 60:
                pause = self.restart_min  # it ran well for a while: start over gently
            await asyncio.sleep(pause)
            pause = min(self.restart_max, pause * 2)

    @property
    def running(self) -> list[str]:
        return [n for n, t in self._tasks.items() if not t.done()]

    async def stop(self) -> None:
        pending = set(self._tasks.values())
        self._tasks = {}
        for _ in range(10):  # a loop may swallow one cancellation: ask again
            if not pending:
                break
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1.0)
        for task in pending:
            log.error("worker %s did not stop", task.get_name())
        for closer in reversed(self._closers):
            try:
                await closer()
            except Exception:  # noqa: BLE001 - shutting down: log and go on
                log.exception("stopping a worker failed")
        self._closers.clear()


def delivery_config(settings: Settings) -> DeliveryConfig:
    return DeliveryConfig(
        timeout=settings.notify_timeout,
        max_attempts=max(1, settings.notify_max_attempts),
        backoff=settings.notify_backoff,
        backoff_max=settings.notify_backoff_max,
        concurrency=max(1, settings.notify_concurrency),
        queue=max(1, settings.notify_queue),
        inflight=max(1, settings.notify_inflight),
    )


async def start_workers(
    settings: Settings,
    outbox: Outbox,
    subscriptions: SubscriptionSource | None,
    policy: OutboundPolicy,
    **engine_options: Any,
) -> Workers:
    """Start delivering what ``outbox`` records (opened with its stores, ``Stores.open``).

    Without a subscription service nothing is delivered.
    """
    workers = Workers()
    if subscriptions is None:
        return workers
    config = delivery_config(settings)
    itself = SelfAddress.of(settings.host, settings.port, settings.public_url)
    sender = Senders(
        HttpSender(policy, timeout=config.timeout, itself=itself),
        MqttSender(policy, timeout=config.timeout),
    )
    engine = NotificationEngine(outbox, subscriptions, sender, config, **engine_options)
    engine.attach()
    workers.engine, workers.outbox = engine, outbox
    workers.add("notifications.changes", engine.run_changes)
    workers.add("notifications.deliveries", engine.run_deliveries)
    workers.add("notifications.periodic", engine.run_periodic)
    workers.on_stop(lambda: engine.aclose(grace=min(5.0, config.timeout)))
    workers.start()
    return workers


__all__ = ["Workers", "delivery_config", "start_workers"]
