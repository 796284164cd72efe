"""`python -m bench.durability`: what SQLite's synchronous=FULL costs beside NORMAL.

FULL (the default) syncs the WAL at every commit, so an acknowledged write survives power
loss; NORMAL syncs it only at checkpoints. The write scenarios of the main bench (create,
partial update, batch upsert) run against a broker on a fresh SQLite file with each
setting, and single-entity writes go straight through the store (one at a time: one sync
each; 64 at a time: shared by group commit). The settings alternate round by round, so
that the noise of a shared machine falls on both alike. Each row gives the median rate
(and p95 over HTTP) of each setting and FULL's rate as a percentage of NORMAL's.

Prints one JSON line per scenario and writes them to bench/results/durability-<ts>.jsonl;
``--report`` also rewrites this suite's section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.__main__ import (
    DURABILITY_TITLE,
    SCENARIOS,
    head_commit,
    replace_section,
    run_scenarios,
    save_lines,
)
from urbanos.storage.base import Write
from urbanos.storage.sqlite import SqliteStore

WRITES = ("create entity", "partial attribute update (1,000 entities)",
          "batch upsert, 1,000 entities per request")
LEVELS = ("normal", "full")
#: (name, writers at a time, writes): the store without HTTP, so the commit shows
STORE_WRITES = [("store: single-entity writes, one at a time", 1, 300),
                ("store: single-entity writes, 64 at a time (group commit)", 64, 3000)]


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per scenario: every round's entities per second and p95, for each level."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for round_ in range(args.rounds):
        for level in LEVELS if round_ % 2 == 0 else reversed(LEVELS):
            # a batch takes seconds: it gets a run of its own, long enough for several
            for chosen, seconds in ((WRITES[:2], args.seconds), (WRITES[2:], args.batch_seconds)):
                load = os.getloadavg()[0]
                with tempfile.TemporaryDirectory() as tmp:
                    url = f"sqlite:///{Path(tmp) / 'durability.db'}"
                    found = run_scenarios(
                        "sqlite", url, argparse.Namespace(**{**vars(args), "seconds": seconds}),
                        chosen=chosen.__contains__,
                        settings={"URBANOS_SQLITE_SYNCHRONOUS": level})
                for r in found:
                    runs.setdefault((r["scenario"], level), []).append({**r, "load": load})
    for round_ in range(args.rounds):  # the store alone: what one commit's sync costs
        for level in LEVELS if round_ % 2 == 0 else reversed(LEVELS):
            for name, writers, count in STORE_WRITES:
                load = os.getloadavg()[0]
                r = asyncio.run(_store_writes(level, writers, count))
                runs.setdefault((name, level), []).append({**r, "load": load})
    rows = []
    for name in [n for n, *_ in SCENARIOS if n in WRITES] + [n for n, *_ in STORE_WRITES]:
        row: dict[str, Any] = {"scenario": name}
        for level in LEVELS:
            got = runs[(name, level)]
            row[f"{level}_per_s"] = statistics.median(
                r["requests"] * r["unit"] / r["seconds"] for r in got)  # wrk rounds its rps
            if "p95_ms" in got[0]:  # over HTTP (wrk)
                row[f"{level}_p95_ms"] = statistics.median(r["p95_ms"] for r in got)
        if row["normal_per_s"]:
            row["full_pct_of_normal"] = round(100 * row["full_per_s"] / row["normal_per_s"])
        every = [r for level in LEVELS for r in runs[(name, level)]]
        row["errors"] = sum(r["errors"] for r in every)
        row["load_avg"] = round(statistics.median(r["load"] for r in every), 1)
        row["rounds"] = args.rounds
        row["seconds"] = got[0]["seconds"]
        row["requests"] = sum(r["requests"] for r in every)
        rows.append(row)
    return rows


async def _store_writes(level: str, writers: int, count: int) -> dict[str, Any]:
    """``count`` single-entity writes through the store, ``writers`` at a time."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "store.db", synchronous=level)
        await store.open()
        try:
            left = iter(range(count))

            async def writer() -> None:
                for n in left:
                    doc = stellio_document(n)
                    await store.apply("", [Write("put", doc["id"], doc)])

            started = time.perf_counter()
            await asyncio.gather(*(writer() for _ in range(writers)))
            return {"requests": count, "seconds": time.perf_counter() - started, "unit": 1,
                    "errors": 0}
        finally:
            await store.close()


def stellio_document(n: int) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Entity:w{n}", "type": ["https://ex.org/Entity"],
            "attrs": {"https://ex.org/v": [{"type": "Property", "value": n}]}}


def report(rows: list[dict[str, Any]]) -> None:
    """Put this suite's section into docs/benchmarks.md, in place of the previous one."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = (f"Run: {when}, commit {head_commit()}, {platform.machine()}, {os.cpu_count()} cores "
             f"shared with other work (`load_avg`: the 1-minute load when each run started), "
             f"the database file on {_filesystem(tempfile.gettempdir())}.\n")
    replace_section(DURABILITY_TITLE, rows, where)


def _filesystem(folder: str) -> str:
    """The type of the file system ``folder`` is on (``/proc/mounts``), e.g. ext4."""
    best, kind = "", "an unknown file system"
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        inside = folder == mount or folder.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, fstype
    return kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--batch-seconds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--entities", type=int, default=1000,
                        help="preloaded entities (the partial updates go to the first 1,000)")
    parser.add_argument("--report", action="store_true",
                        help="also rewrite this suite's section of docs/benchmarks.md")
    args = parser.parse_args()
    args.only = None
    os.environ["BENCH_ENTITIES"] = str(args.entities)  # the wrk scripts' id range
    rows = measure(args)
    for row in rows:
        print(json.dumps(row))
    save_lines("durability", rows)
    if args.report:
        report(rows)


if __name__ == "__main__":
    main()
