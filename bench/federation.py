"""`python -m bench.federation`: a query through one registration beside the same query local.

Two brokers on this machine, each on its own SQLite file: the *source* holds the Stellio
entities of the main bench (10 types); the *forwarder* holds nothing and has one inclusive
registration naming the source for the ten types. The read scenarios of the main bench
(retrieve by id, query type + property value) run against the source directly (``local``)
and through the forwarder (``federated``: the forwarder looks in its own store, forwards to
the source, validates and merges the answer, then renders it).

The two configurations alternate round by round; each row gives medians over the rounds.
The target of the federation work: federated p95 <= 2 x local p95 + 5 ms.

Prints one JSON line per row, writes them to bench/results/federation-<ts>.jsonl;
``--report`` also rewrites this suite's section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.__main__ import (
    FEDERATION_FACTOR,
    FEDERATION_SLACK_MS,
    FEDERATION_TITLE,
    federation_verdict,
    free_port,
    head_commit,
    replace_section,
    run_wrk,
    save_lines,
    start_broker,
    stop,
)
from bench.rss import load

#: (scenario, wrk script, connections): the read scenarios of the main bench
READS = [("retrieve entity by id", "retrieve.lua", 16),
         ("query type + property value", "query_q.lua", 16)]
CONFIGS = ("local", "federated")


@contextlib.contextmanager
def broker(store: Path) -> Iterator[str]:
    port = free_port()
    proc = start_broker(port, store)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def register(forwarder: str, source: str) -> None:
    """One inclusive registration on the forwarder naming the source for the ten types."""
    r = httpx.post(f"{forwarder}/ngsi-ld/v1/csourceRegistrations", json={
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": f"Entity{n}"} for n in range(10)]}],
        "endpoint": source, "mode": "inclusive",
    })
    if r.status_code != 201:
        raise SystemExit(f"registration refused: {r.status_code} {r.text}")


def check(local: str, federated: str) -> None:
    """Both answer the same, and the forwarder really forwards, before anything is timed."""
    path = "/ngsi-ld/v1/entities/urn:ngsi-ld:Entity:r1"
    a, b = httpx.get(local + path), httpx.get(federated + path)
    if a.status_code != 200 or b.status_code != 200 or a.json() != b.json():
        raise SystemExit(f"retrieve differs: {a.status_code} {b.status_code} {b.text[:300]}")
    if httpx.get(federated + path, params={"local": "true"}).status_code != 404:
        raise SystemExit("the forwarder holds the entity itself: nothing would be forwarded")
    params = {"type": "Entity1", "q": "dissolvedOxygen>90", "limit": "1000"}
    ids = [sorted(e["id"] for e in httpx.get(base + "/ngsi-ld/v1/entities", params=params).json())
           for base in (local, federated)]
    if not ids[0] or ids[0] != ids[1]:
        raise SystemExit(f"query differs: {len(ids[0])} local, {len(ids[1])} federated")


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        source_file, forwarder_file = Path(tmp) / "source.db", Path(tmp) / "forwarder.db"
        rate = asyncio.run(load(source_file, args.entities))
        print(f"loaded {args.entities:,} entities at {rate:,.0f}/s", file=sys.stderr)
        bases = {"local": stack.enter_context(broker(source_file)),
                 "federated": stack.enter_context(broker(forwarder_file))}
        register(bases["federated"], bases["local"])
        check(bases["local"], bases["federated"])
        for config in CONFIGS:  # caches and the OS's pages
            for _, script, connections in READS:
                run_wrk(bases[config], script, args.warmup, connections)
        for round_ in range(args.rounds):
            for config in CONFIGS if round_ % 2 == 0 else CONFIGS[::-1]:
                for name, script, connections in READS:
                    load_avg = os.getloadavg()[0]
                    r = run_wrk(bases[config], script, args.seconds, connections)
                    r["load"] = load_avg
                    runs.setdefault((name, config), []).append(r)
                    print(json.dumps({"round": round_, "config": config, "scenario": name,
                                      **r}), file=sys.stderr)
    return rows(runs, args.rounds)


def rows(runs: dict[tuple[str, str], list[dict[str, Any]]], rounds: int) -> list[dict[str, Any]]:
    out = []
    for name, _, _ in READS:
        local_p95 = statistics.median(r["p95_ms"] for r in runs[(name, "local")])
        local_rate = statistics.median(_rate(r) for r in runs[(name, "local")])
        for config in CONFIGS:
            got = runs[(name, config)]
            p95 = statistics.median(r["p95_ms"] for r in got)
            rate = statistics.median(_rate(r) for r in got)
            row = {
                "scenario": f"{name}: {config}",
                "req_per_s": round(rate, 1),
                "pct_of_local": round(100 * rate / local_rate, 1),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in got), 2),
                "p95_ms": round(p95, 2),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in got), 2),
                "errors": sum(r["errors"] for r in got),
                "load_avg": round(statistics.median(r["load"] for r in got), 1),
                "rounds": rounds,
            }
            if config == "federated":
                row["p95_limit_ms"] = round(FEDERATION_FACTOR * local_p95 + FEDERATION_SLACK_MS, 2)
            out.append(row)
    return out


def _rate(r: dict[str, Any]) -> float:
    return float(r["requests"] / r["seconds"])  # wrk rounds its rps


def report(found: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Put this suite's section into docs/benchmarks.md, in place of the previous one."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = (f"Run: {when}, commit {head_commit()}, {platform.machine()}, {os.cpu_count()} "
             f"cores shared by both brokers, wrk (1 thread) and other work (`load_avg`: the "
             f"1-minute load when each run started); {args.entities:,} entities, "
             f"{args.rounds} rounds of {args.seconds} s per scenario and configuration.\n\n"
             f"{federation_verdict(found)}\n")
    replace_section(FEDERATION_TITLE, found, where)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--report", action="store_true",
                        help="also rewrite this suite's section of docs/benchmarks.md")
    args = parser.parse_args()
    os.environ["BENCH_ENTITIES"] = str(args.entities)  # the wrk scripts' id range
    started = time.perf_counter()
    found = measure(args)
    for row in found:
        print(json.dumps(row))
    save_lines("federation", found)
    if args.report:
        report(found, args)
    print(f"bench.federation: {time.perf_counter() - started:,.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
