"""Broker memory with many entities stored: `python -m bench.rss --entities 1000000`.

The entities are written straight into a SQLite file through the store (the stored form is
made once per type by the core and copied per entity; no history rows), which is what makes
a million entities load in minutes. Then a broker serves that file and is driven with
retrieves and queries over all of it; its RSS is read after each step. Writes one JSON line
per step to bench/results/rss-<timestamp>.jsonl.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.__main__ import free_port, rss_mb, run_wrk, save_lines, start_broker
from bench.data import stellio_entity
from urbanos.core.entity import expand_entity
from urbanos.core.jsonld import core_term_map
from urbanos.core.timeutil import now_iso
from urbanos.storage.base import Write
from urbanos.storage.sqlite import SqliteStore


async def load(db: Path, entities: int, batch: int = 2000) -> float:
    """``entities`` Stellio entities written through the SQLite store; returns entities/s."""
    terms, now = core_term_map(), now_iso()
    templates = [orjson.dumps(expand_entity(stellio_entity(t), terms, now)) for t in range(10)]
    store = SqliteStore(db)
    await store.open()
    start = time.perf_counter()
    try:
        for first in range(1, entities + 1, batch):
            writes = []
            for i in range(first, min(entities, first + batch - 1) + 1):
                doc = orjson.loads(templates[i % 10])
                doc["id"] = f"urn:ngsi-ld:Entity:r{i}"
                oxygen = doc["attrs"]["https://uri.etsi.org/ngsi-ld/default-context/dissolvedOxygen"]
                oxygen[0]["value"] = stellio_entity(i)["dissolvedOxygen"]["value"]
                writes.append(Write("put", doc["id"], doc))
            await store.apply("", writes)
    finally:
        await store.close()
    return entities / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    os.environ["BENCH_ENTITIES"] = str(args.entities)
    lines: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "rss.db"
        rate = asyncio.run(load(db, args.entities))
        print(f"loaded {args.entities:,} entities at {rate:,.0f}/s", file=sys.stderr)
        port = free_port()
        broker = start_broker(port, db)
        base = f"http://127.0.0.1:{port}"
        try:
            db_mb = round(sum(p.stat().st_size for p in db.parent.iterdir()) / 2**20)
            lines.append({"scenario": "broker started", "entities": args.entities,
                          "rss_mb": round(rss_mb(broker.pid), 1), "db_mb": db_mb})
            for name, script, connections in (
                ("after retrieve by id", "retrieve.lua", 32),
                ("after query type + q", "query_q.lua", 16),
            ):
                r = run_wrk(base, script, args.seconds, connections)
                lines.append({"scenario": name, "entities": args.entities,
                              "rss_mb": round(rss_mb(broker.pid), 1), "db_mb": db_mb,
                              "rps": r["rps"], "p95_ms": r["p95_ms"], "errors": r["errors"]})
                print(json.dumps(lines[-1]))
        finally:
            broker.terminate()
            broker.wait(10)
    save_lines("rss", lines)


if __name__ == "__main__":
    main()
