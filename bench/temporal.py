"""`python -m bench.temporal`: Stellio's temporal load scenario against urbanos.

Stellio's load tests (REFERENCES.md, stellio-hub/ngsild-load-tests) retrieve the temporal
evolution of one of 10 entities, either aggregated (``aggrPeriodDuration=PT1S`` and one
random method of the eight) or as ``temporalValues``, with ``timerel=after``. Here each of
the 10 entities holds 100,000 instances (5 series of 20,000: ammonium and waterTemperature
with two datasetIds each, dissolvedOxygen), observed 100 ms apart, loaded through
``POST /temporal/entities/{id}/attrs``. The broker (one process, SQLite) and wrk share the
machine. Prints one JSON line per scenario and writes them to bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.__main__ import free_port, rss_mb, save_lines, start_broker
from bench.data import stellio_entity

HERE = Path(__file__).parent
START = dt.datetime(2023, 6, 1, tzinfo=dt.UTC)
#: (series name, datasetId) of the Stellio template that carry observations
SERIES = [("ammonium", "urn:ngsi-ld:Dataset:Bottom"), ("ammonium", "urn:ngsi-ld:Dataset:Surface"),
          ("waterTemperature", "urn:ngsi-ld:Dataset:Bottom"),
          ("waterTemperature", "urn:ngsi-ld:Dataset:Surface"), ("dissolvedOxygen", None)]
METHODS = ["totalCount", "distinctCount", "sum", "avg", "min", "max", "stddev", "sumsq"]
WINDOW = "timerel=after&timeAt=2023-01-01T00:00:00Z"

LUA = """
local ids = {%(ids)s}
local methods = {%(methods)s}
request = function()
  local id = ids[math.random(1, #ids)]
  local path = "/ngsi-ld/v1/temporal/entities/" .. id .. "?%(window)s"
  if "%(mode)s" == "aggregated" then
    path = path .. "&options=aggregatedValues&aggrPeriodDuration=PT1S&aggrMethods="
      .. methods[math.random(1, #methods)]
  else
    path = path .. "&options=temporalValues"
  end
  return wrk.format("GET", path)
end
"""


def instances(first: int, count: int, dataset: str | None, seed: int) -> list[dict[str, Any]]:
    out = []
    for n in range(first, first + count):
        at = START + dt.timedelta(milliseconds=100 * n)
        inst: dict[str, Any] = {
            "type": "Property", "value": round(((n * 7919 + seed) % 10_000) / 100, 2),
            "observedAt": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
        }
        if dataset:
            inst["datasetId"] = dataset
        out.append(inst)
    return out


def load(base: str, entities: int, per_entity: int, chunk: int) -> tuple[list[str], float]:
    """Create the entities (core API) and add their history; instances per second."""
    per_series = per_entity // len(SERIES)
    ids = []
    started = time.perf_counter()
    with httpx.Client(base_url=base, timeout=300) as c:
        for e in range(entities):
            doc = stellio_entity(e + 1)
            doc["id"] = f"urn:ngsi-ld:Entity:temporal{e + 1}"
            c.post("/ngsi-ld/v1/entities", json=doc).raise_for_status()
            ids.append(doc["id"])
            for first in range(0, per_series, chunk):
                count = min(chunk, per_series - first)
                body: dict[str, list[dict[str, Any]]] = {}
                for k, (name, dataset) in enumerate(SERIES):
                    body.setdefault(name, []).extend(instances(first, count, dataset, e * 10 + k))
                c.post(f"/ngsi-ld/v1/temporal/entities/{doc['id']}/attrs",
                       json=body).raise_for_status()
    return ids, entities * per_entity / (time.perf_counter() - started)


def check(base: str, entity_id: str) -> dict[str, Any]:
    """One answer of each kind, to show what the scenarios fetch."""
    out: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=60) as c:
        for mode, extra in (("aggregated", "&options=aggregatedValues&aggrMethods=avg"
                                           "&aggrPeriodDuration=PT1S"),
                            ("temporalValues", "&options=temporalValues")):
            r = c.get(f"/ngsi-ld/v1/temporal/entities/{entity_id}?{WINDOW}{extra}")
            r.raise_for_status()
            out[mode] = {"status": r.status_code, "bytes": len(r.content),
                         "content_range": r.headers.get("content-range")}
    return out


def run_wrk(base: str, mode: str, ids: list[str], seconds: int,
            connections: int) -> dict[str, Any]:
    script = LUA % {"ids": ", ".join(json.dumps(i) for i in ids),
                    "methods": ", ".join(json.dumps(m) for m in METHODS),
                    "window": WINDOW, "mode": mode}
    script += (HERE / "wrk" / "report.lua").read_text()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "-s", f.name, base],
            capture_output=True, text=True, check=True,
        ).stdout
    finally:
        os.unlink(f.name)
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entities", type=int, default=10)
    parser.add_argument("--instances", type=int, default=100_000, help="per entity")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, nargs="+", default=[8])
    parser.add_argument("--instance-limit", type=int, nargs="+", default=[10],
                        help="URBANOS_TEMPORAL_INSTANCE_LIMIT values to run the scenarios with")
    parser.add_argument("--chunk", type=int, default=2000, help="instances per series and POST")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    lines: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "temporal.db"
        for n, limit in enumerate(args.instance_limit):
            os.environ["URBANOS_TEMPORAL_INSTANCE_LIMIT"] = str(limit)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            broker = start_broker(port, db)
            try:
                if n == 0:
                    ids, rate = load(base, args.entities, args.instances, args.chunk)
                    print(json.dumps({"scenario": "temporal load", "instances": args.entities
                                      * args.instances, "instances_per_s": round(rate)}))
                    sys.stdout.flush()
                else:
                    ids = [f"urn:ngsi-ld:Entity:temporal{e + 1}" for e in range(args.entities)]
                shapes = check(base, ids[0])
                for mode in ("aggregated", "temporalValues"):
                    for connections in args.connections:
                        r = run_wrk(base, mode, ids, args.seconds, connections)
                        r.update(scenario=f"temporal {mode}", connections=connections,
                                 instance_limit=limit, entities=args.entities,
                                 instances_per_entity=args.instances,
                                 response=shapes[mode], rss_mb=round(rss_mb(broker.pid), 1),
                                 db_mb=round(db.stat().st_size / 2**20, 1))
                        lines.append(r)
                        print(json.dumps(r))
                        sys.stdout.flush()
            finally:
                broker.terminate()
                broker.wait(10)
    save_lines("temporal", lines)


if __name__ == "__main__":
    main()
