"""`make bench`: start a broker on a fresh SQLite file, load data, drive it with wrk.

Writes bench/results/<timestamp>.json and docs/benchmarks.md. Figures on a shared 2-core
machine are noisy: read them as orders of magnitude and as ratios between scenarios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent
ROOT = HERE.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(port: int, db: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "URBANOS_STORE": f"sqlite:///{db}", "URBANOS_PORT": str(port),
           "URBANOS_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([sys.executable, "-m", "urbanos.cli", "serve"], env=env)
    for _ in range(100):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("broker did not start")


def preload(base: str, n: int) -> None:
    """Entities urn:ngsi-ld:Entity:r1..rN for the read scenarios, by batch upsert."""
    with httpx.Client(base_url=base, timeout=60) as c:
        for start in range(1, n + 1, 1000):
            batch = [
                {"id": f"urn:ngsi-ld:Entity:r{i}", "type": "Entity",
                 "name": {"type": "Property", "value": "Name of my entity"},
                 "dissolvedOxygen": {"type": "Property", "value": 8.9}}
                for i in range(start, min(n, start + 999) + 1)
            ]
            r = c.post("/ngsi-ld/v1/entityOperations/upsert", json=batch)
            r.raise_for_status()


def run_wrk(base: str, script: str, seconds: int, connections: int, threads: int) -> dict:
    text = (HERE / "wrk" / script).read_text() + "\n" + (HERE / "wrk" / "report.lua").read_text()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(text)
    try:
        out = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
             "--latency", "-s", f.name, base],
            capture_output=True, text=True, check=True,
        ).stdout
    finally:
        os.unlink(f.name)
    return json.loads(out.strip().splitlines()[-1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


SCENARIOS = [("retrieve entity by id", "retrieve.lua"), ("create entity", "create.lua")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--entities", type=int, default=10_000)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(port, Path(tmp) / "bench.db")
        try:
            preload(base, args.entities)
            os.environ["BENCH_ENTITIES"] = str(args.entities)
            results = []
            for name, script in SCENARIOS:
                r = run_wrk(base, script, args.seconds, args.connections, args.threads)
                r.update(scenario=name, rss_mb=round(rss_mb(broker.pid), 1))
                results.append(r)
                print(json.dumps(r))
        finally:
            broker.terminate()
            broker.wait(10)
    write_report(results, args)


def write_report(results: list[dict], args: argparse.Namespace) -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    (HERE / "results").mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    (HERE / "results" / f"{stamp}.json").write_text(json.dumps(results, indent=2))
    rows = "\n".join(
        f"| {r['scenario']} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
        f"{r['p99_ms']:.1f} | {r['errors']} | {r['rss_mb']:.0f} |"
        for r in results
    )
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "benchmarks.md").write_text(
        f"""# Benchmarks

Run: {when}, commit {commit}. Machine: {machine}, shared by the broker (one process,
SQLite store) and the load generator (wrk, {args.threads} thread, {args.connections}
connections, {args.seconds} s per scenario); {args.entities:,} entities preloaded.
Regenerate with `make bench`.

| scenario | req/s | p50 ms | p95 ms | p99 ms | errors | broker RSS MB |
|---|---:|---:|---:|---:|---:|---:|
{rows}
"""
    )


if __name__ == "__main__":
    main()
