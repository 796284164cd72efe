"""`python -m bench.auth`: what access control costs the reads, beside ``URBANOS_AUTH=none``.

One SQLite file is preloaded with the Stellio entities of the main bench. Then brokers
serve it, each configured one way, and the read scenarios of the main bench
(retrieve by id, query type + property value) run against each with the credential of
that configuration on every request:

- ``none``: no authentication (every caller may do everything);
- ``oidc``: a bearer token of a local issuer (``bench.issuer``) with ``roles: [reader]``;
  the broker fetches the issuer's keys once and then verifies the token from its cache;
- ``apikey``: an API key of role reader, made by ``urbanos keys create``;
- ``oidc, grant``: a token with no role but a group a grant gives read on the ten types:
  every entity passes the policy's View (not a role, which needs no View);
- ``oidc, grant hiding one attribute``: the same grant hiding ``stationCode``: every entity
  shown is copied without it.

The brokers run side by side on the file (all idle but the one measured); the
configurations alternate round by round (their order rotates), so that the noise of a
shared machine falls on all alike; each row gives the median of the rounds, the spread
(slowest and fastest round) and the median rate as a percentage of ``none``'s. The target
of the access-control work: the reader's token and key within 15% of ``none``; the grant
rows are there for their cost, not held to it.

Prints one JSON line per row and writes them to bench/results/auth-<ts>.jsonl;
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.__main__ import (
    AUTH_TITLE,
    auth_verdict,
    free_port,
    head_commit,
    replace_section,
    run_wrk,
    save_lines,
    start_broker,
    stop,
)
from bench.issuer import AUDIENCE, Issuer
from bench.rss import load

DEF = "https://uri.etsi.org/ngsi-ld/default-context/"
#: (scenario, wrk script, connections): the read scenarios of the main bench
READS = [("retrieve entity by id", "retrieve.lua", 32),
         ("query type + property value (100k entities)", "query_q.lua", 16)]
#: a grant gives each group read on the ten types; PARTIAL's hides stationCode
GROUP, PARTIAL = "/bench/readers", "/bench/partial"


@dataclass
class Config:
    name: str
    settings: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)
    #: held to the target (a role: no View); the grant rows are reported for their cost
    target: bool = True
    hides: bool = False  #: stationCode is hidden from it


def configs(issuer: Issuer, key: str) -> list[Config]:
    oidc = {"URBANOS_AUTH": "oidc", "URBANOS_OIDC_ISSUER": issuer.url,
            "URBANOS_OIDC_AUDIENCE": AUDIENCE}
    reader = issuer.token("bench-reader", roles=["reader"])
    member = issuer.token("bench-member", groups=[GROUP])
    partial = issuer.token("bench-partial", groups=[PARTIAL])
    return [
        Config("none", {"URBANOS_AUTH": "none"}),
        Config("oidc token, role reader", oidc, {"Authorization": f"Bearer {reader}"}),
        Config("API key, role reader", {"URBANOS_AUTH": "apikey"}, {"X-Api-Key": key}),
        Config("oidc token, no role, read grant on the 10 types", oidc,
               {"Authorization": f"Bearer {member}"}, target=False),
        Config("oidc token, no role, read grant hiding 1 attribute", oidc,
               {"Authorization": f"Bearer {partial}"}, target=False, hides=True),
    ]


async def prepare(url: str, entities: int) -> str:
    """Preload the entities (``bench.rss`` writes them straight through the store, which
    is quicker than over HTTP), give the two groups their grants; return the reader's API
    key, made as an operator makes one."""
    rate = await load(Path(url.removeprefix("sqlite:///")), entities)
    print(f"loaded {entities:,} entities at {rate:,.0f}/s", file=sys.stderr)
    from urbanos.core.policy import OPEN, Action, Assignee, Grant, Target
    from urbanos.services.access import AccessService
    from urbanos.storage import open_stores

    stores = open_stores(url, readers=1)
    await stores.open()
    try:
        access = AccessService(stores.access)
        types = tuple(f"{DEF}Entity{n}" for n in range(10))
        for group, hidden in ((GROUP, ()), (PARTIAL, (f"{DEF}stationCode",))):
            await access.add_grant(OPEN, Grant(
                id=f"urn:ngsi-ld:Permission:bench{group.replace('/', '-')}", tenant="",
                assignee=Assignee.parse(f"claim:groups={group}"),
                actions=frozenset({Action.READ}), target=Target(types=types, hidden=hidden)))
    finally:
        await stores.close()
    made = subprocess.run(
        [sys.executable, "-m", "urbanos.cli", "keys", "--store", url, "create", "--role",
         "reader", "--name", "bench reader"], capture_output=True, text=True)
    if made.returncode != 0:
        raise SystemExit(f"urbanos keys create failed: {made.stderr}")
    return made.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def broker(url: str, config: Config) -> Iterator[str]:
    port = free_port()
    proc = start_broker(port, url, config.settings)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def check(base: str, config: Config) -> None:
    """The credential works and shows what it should, before anything is measured."""
    headers = config.headers
    r = httpx.get(f"{base}/ngsi-ld/v1/entities/urn:ngsi-ld:Entity:r1", headers=headers)
    r.raise_for_status()
    hidden = config.hides
    if ("stationCode" in r.json()) == hidden:
        raise SystemExit(f"{config.name}: stationCode {'shown' if hidden else 'missing'}")
    r = httpx.get(f"{base}/ngsi-ld/v1/entities", headers=headers,
                  params={"type": "Entity1", "q": "dissolvedOxygen>90", "count": "true"})
    r.raise_for_status()
    if int(r.headers["NGSILD-Results-Count"]) == 0:
        raise SystemExit(f"{config.name}: a query found nothing")


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every configuration's broker up at once (idle but one), warmed, then the rounds."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp, Issuer() as issuer, \
            contextlib.ExitStack() as brokers:
        url = f"sqlite:///{Path(tmp) / 'auth.db'}"
        key = asyncio.run(prepare(url, args.entities))
        chosen = configs(issuer, key)
        bases = {c.name: brokers.enter_context(broker(url, c)) for c in chosen}
        for config in chosen:
            check(bases[config.name], config)
            for _, script, connections in READS:  # the broker's caches, the OS's pages
                run_wrk(bases[config.name], script, args.warmup, connections, config.headers)
        for round_ in range(args.rounds):
            shift = round_ % len(chosen)
            for config in chosen[shift:] + chosen[:shift]:
                for name, script, connections in READS:
                    load_avg = os.getloadavg()[0]
                    r = run_wrk(bases[config.name], script, args.seconds, connections,
                                config.headers)
                    r["load"] = load_avg
                    runs.setdefault((name, config.name), []).append(r)
                    print(json.dumps({"round": round_, "config": config.name,
                                      "scenario": name, **r}), file=sys.stderr)
    return rows(runs, chosen, args.rounds)


def rows(runs: dict[tuple[str, str], list[dict[str, Any]]], chosen: list[Config],
         rounds: int) -> list[dict[str, Any]]:
    out = []
    for name, _, _ in READS:
        base = statistics.median(_rate(r) for r in runs[(name, "none")])
        for config in chosen:
            got = runs[(name, config.name)]
            rate = statistics.median(_rate(r) for r in got)
            out.append({
                "scenario": f"{name}: {config.name}",
                "req_per_s": round(rate, 1),
                "pct_of_none": round(100 * rate / base, 1),
                "slowest_round": round(min(_rate(r) for r in got), 1),
                "fastest_round": round(max(_rate(r) for r in got), 1),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in got), 2),
                "p99_ms": round(statistics.median(r["p99_ms"] for r in got), 2),
                "errors": sum(r["errors"] for r in got),
                "load_avg": round(statistics.median(r["load"] for r in got), 1),
                "rounds": rounds,
                "held_to_target": int(config.target),
            })
    return out


def _rate(r: dict[str, Any]) -> float:
    return float(r["requests"] / r["seconds"])  # wrk rounds its rps


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Put this suite's section into docs/benchmarks.md, in place of the previous one."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = (f"Run: {when}, commit {head_commit()}, {platform.machine()}, {os.cpu_count()} "
             f"cores shared by the broker, wrk (1 thread) and other work (`load_avg`: the "
             f"1-minute load when each run started); {args.entities:,} entities, "
             f"{args.rounds} rounds of {args.seconds} s per scenario and configuration.\n\n"
             f"{auth_verdict(rows)}\n")
    replace_section(AUTH_TITLE, rows, where)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--report", action="store_true",
                        help="also rewrite this suite's section of docs/benchmarks.md")
    args = parser.parse_args()
    os.environ["BENCH_ENTITIES"] = str(args.entities)  # the wrk scripts' id range
    started = time.perf_counter()
    found = measure(args)
    for row in found:
        print(json.dumps(row))
    save_lines("auth", found)
    if args.report:
        report(found, args)
    print(f"bench.auth: {time.perf_counter() - started:,.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
