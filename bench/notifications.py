"""`python -m bench.notifications`: notification throughput and update -> delivery latency.

A broker (one process, fresh SQLite file, default notification settings) and a receiver
(another process: a minimal HTTP server answering 204) share the machine with this driver.
Each update writes the driver's clock into the ``sentAt`` attribute; the receiver reads it
back from the notification, so latency is measured from just before the update request is
sent to the arrival of its notification (same clock, same machine).

Scenarios, each with 1 and with 10,000 subscriptions (of which one matches each update: the
others watch other entities, as in a city where every app watches its own few things):

* ``paced``: updates at a fixed rate well below capacity: the latency a quiet broker adds;
* ``saturated``: concurrent writers as fast as the broker takes them: how many notifications
  per second get delivered, and the latency under that load.

And ``fan-out``: 10,000 subscriptions that all match, a few updates: notifications
delivered per second when one change fans out (spread over 8 receiver addresses,
127.0.0.1-8, since sends are limited per endpoint).

Prints one JSON line per scenario and writes them to bench/results/notifications-<ts>.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.__main__ import free_port, rss_mb, save_lines, start_broker

HERE = Path(__file__).parent
ENTITIES = 100
RECEIVER_HOSTS = [f"127.0.0.{n}" for n in range(1, 9)]


# -- the receiver (runs in its own process) ---------------------------------------------------
class Receiver:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.arrivals: list[float] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.time()
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length) if length else b""
                if head.startswith(b"GET /stats"):
                    payload = json.dumps({"latencies": self.latencies,
                                          "arrivals": self.arrivals}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
                elif head.startswith(b"POST /reset"):
                    self.latencies, self.arrivals = [], []
                    writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                else:
                    try:
                        sent = json.loads(body)["data"][0]["sentAt"]
                        self.latencies.append(now - float(sent))
                    except (ValueError, KeyError, IndexError, TypeError):
                        pass
                    self.arrivals.append(now)
                    writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def serve_receiver(port: int) -> None:
    receiver = Receiver()
    servers = [await asyncio.start_server(receiver.handle, host, port, backlog=1024)
               for host in RECEIVER_HOSTS]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


# -- the driver -------------------------------------------------------------------------------
def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def ms(value: float) -> float:
    return round(value * 1000, 2)


def subscription(n: int, uri: str, entity: dict[str, str]) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Subscription:bench:{n}",
        "type": "Subscription",
        "entities": [entity],
        "watchedAttributes": ["sentAt"],
        "notification": {"format": "keyValues", "attributes": ["sentAt"],
                         "endpoint": {"uri": uri, "accept": "application/json"}},
    }


def sensor(n: int) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Sensor:{n}", "type": "Sensor",
            "sentAt": {"type": "Property", "value": 0.0}}


async def create_all(client: httpx.AsyncClient, path: str, bodies: list[dict[str, Any]],
                     concurrency: int = 8) -> None:
    queue = list(reversed(bodies))

    async def worker() -> None:
        while queue:
            body = queue.pop()
            r = await client.post(path, json=body)
            if r.status_code != 201:
                raise SystemExit(f"POST {path}: {r.status_code} {r.text}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def update(client: httpx.AsyncClient, n: int, timings: list[float]) -> None:
    started = time.time()
    r = await client.patch(f"entities/urn:ngsi-ld:Sensor:{n % ENTITIES}/attrs",
                           json={"sentAt": {"type": "Property", "value": started}})
    timings.append(time.time() - started)
    if r.status_code != 204:
        raise SystemExit(f"update: {r.status_code} {r.text}")


async def receiver_stats(rx: httpx.AsyncClient) -> dict[str, list[float]]:
    return (await rx.get("/stats")).json()  # type: ignore[no-any-return]


async def wait_for(rx: httpx.AsyncClient, expected: int, timeout: float) -> dict[str, list[float]]:
    deadline = time.monotonic() + timeout
    while True:
        stats = await receiver_stats(rx)
        if len(stats["arrivals"]) >= expected or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.2)


def summary(name: str, subs: int, updates: int, update_times: list[float],
            stats: dict[str, list[float]], started: float, expected: int) -> dict[str, Any]:
    arrivals, latencies = stats["arrivals"], stats["latencies"]
    span = (max(arrivals) - started) if arrivals else float("nan")
    return {
        "scenario": f"notifications {name}",
        "subscriptions": subs,
        "updates": updates,
        "updates_per_s": None,
        "notifications_expected": expected,
        "notifications_received": len(arrivals),
        "delivered_per_s": round(len(arrivals) / span, 1) if arrivals else 0.0,
        "latency_p50_ms": ms(percentile(latencies, 50)),
        "latency_p99_ms": ms(percentile(latencies, 99)),
        "update_p50_ms": ms(percentile(update_times, 50)),
        "update_p99_ms": ms(percentile(update_times, 99)),
    }


async def paced(client: httpx.AsyncClient, rx: httpx.AsyncClient, subs: int, rate: float,
                seconds: float) -> dict[str, Any]:
    await rx.post("/reset")
    timings: list[float] = []
    count = int(rate * seconds)
    started = time.time()
    tasks = []
    for n in range(count):
        delay = started + n / rate - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(update(client, n, timings)))
    await asyncio.gather(*tasks)
    stats = await wait_for(rx, count, 60)
    out = summary(f"paced {rate:g}/s", subs, count, timings, stats, started, count)
    out["updates_per_s"] = round(count / seconds, 1)
    return out


async def saturated(client: httpx.AsyncClient, rx: httpx.AsyncClient, subs: int,
                    writers: int, seconds: float) -> dict[str, Any]:
    await rx.post("/reset")
    timings: list[float] = []
    started = time.time()
    stop = started + seconds
    counter = iter(range(10**9))

    async def writer() -> None:
        while time.time() < stop:
            await update(client, next(counter), timings)

    await asyncio.gather(*(writer() for _ in range(writers)))
    wrote = time.time() - started
    count = len(timings)
    stats = await wait_for(rx, count, 120)
    out = summary(f"saturated {writers} writers", subs, count, timings, stats, started, count)
    out["updates_per_s"] = round(count / wrote, 1)
    return out


async def fan_out(client: httpx.AsyncClient, rx: httpx.AsyncClient, subs: int,
                  updates: int) -> dict[str, Any]:
    await rx.post("/reset")
    timings: list[float] = []
    started = time.time()
    for n in range(updates):
        await update(client, n, timings)
    stats = await wait_for(rx, subs * updates, 300)
    return summary("fan-out (all match)", subs, updates, timings, stats, started,
                   subs * updates)


async def run_broker(subs: int, rx_port: int, args: argparse.Namespace,
                     fan: bool) -> list[dict[str, Any]]:
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="urbanos-bench-notify-"))
    proc = start_broker(port, workdir / "bench.db")
    results: list[dict[str, Any]] = []
    try:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/ngsi-ld/v1/",
                                     limits=limits, timeout=60) as client, \
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{rx_port}", timeout=30) as rx:
            await create_all(client, "entities", [sensor(n) for n in range(ENTITIES)])
            bodies = []
            for n in range(subs):
                host = RECEIVER_HOSTS[n % len(RECEIVER_HOSTS)] if fan else RECEIVER_HOSTS[0]
                uri = f"http://{host}:{rx_port}/notify"
                if fan or n == 0:
                    entity = {"type": "Sensor"}
                else:  # watches an entity that the updates never touch
                    entity = {"id": f"urn:ngsi-ld:Sensor:other-{n}", "type": "Sensor"}
                bodies.append(subscription(n, uri, entity))
            t0 = time.monotonic()
            await create_all(client, "subscriptions", bodies)
            setup_s = round(time.monotonic() - t0, 1)
            if fan:
                runs = [await fan_out(client, rx, subs, args.fan_updates)]
            else:
                runs = [await paced(client, rx, subs, args.rate, args.seconds),
                        await saturated(client, rx, subs, args.writers, args.seconds)]
            for r in runs:
                r.update(subscription_setup_s=setup_s, rss_mb=round(rss_mb(proc.pid), 1))
                print(json.dumps(r), flush=True)
                results.append(r)
    finally:
        proc.terminate()
        proc.wait(30)
    return results


async def drive(args: argparse.Namespace) -> list[dict[str, Any]]:
    rx_port = free_port()
    receiver = subprocess.Popen([sys.executable, "-m", "bench.notifications", "--receiver",
                                 str(rx_port)], stdout=subprocess.PIPE, cwd=HERE.parent)
    assert receiver.stdout is not None
    receiver.stdout.readline()  # "ready"
    results: list[dict[str, Any]] = []
    try:
        for subs in args.subscriptions:
            results += await run_broker(subs, rx_port, args, fan=False)
        if args.fan_out:
            results += await run_broker(args.fan_out, rx_port, args, fan=True)
    finally:
        receiver.terminate()
        receiver.wait(10)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, nargs="*", default=[1, 10_000])
    parser.add_argument("--rate", type=float, default=50.0, help="updates per second, paced")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writers, saturated")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fan-out", type=int, default=10_000,
                        help="subscriptions matching every update (0: skip)")
    parser.add_argument("--fan-updates", type=int, default=3)
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.receiver:
        asyncio.run(serve_receiver(args.receiver))
        return
    results = asyncio.run(drive(args))
    path = save_lines("notifications", results, args.out)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
