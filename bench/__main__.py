"""`make bench`: start a broker on a fresh store, load data, drive it with wrk.

Scenarios follow the shapes of Stellio's public load tests (REFERENCES.md) so that figures
compare. They run on SQLite and, when a server answers (``--postgres``), on a PostgreSQL
database created for the run. Ceilings are measured in the same run so figures read as
ratios: a bare endpoint on the same HTTP stack, and executemany of the same rows into each
store. The temporal, notification, memory, durability and access-control suites
(``bench.temporal``, ``bench.notifications``, ``bench.rss``, ``bench.durability``,
``bench.auth``; ``--suites`` picks some) run after them on SQLite. Writes
bench/results/<timestamp>.json and docs/benchmarks.md. The machine is shared by broker and
load generator: read figures as ratios and orders of magnitude.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

from bench.data import stellio_entity
from bench.raw_store import executemany_rows_per_second, postgres_rows_per_second

HERE = Path(__file__).parent
ROOT = HERE.parent

#: (name, wrk script, connections, what one request is worth in entities)
SCENARIOS: list[tuple[str, str, int, int]] = [
    ("retrieve entity by id", "retrieve.lua", 32, 1),
    ("create entity", "create.lua", 32, 1),
    ("partial attribute update (1,000 entities)", "partial_update.lua", 32, 1),
    ("update attributes, 3-attribute fragment", "update_attrs.lua", 32, 1),
    ("query type + property value (100k entities)", "query_q.lua", 16, 1),
    ("query type + relationship object", "query_rel.lua", 16, 1),
    ("batch upsert, 1,000 entities per request", "batch_upsert.lua", 4, 1000),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{url} did not come up")


def start_broker(
    port: int, store: Path | str, settings: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A broker on ``store``: a SQLite file path or a store URL; ``settings`` adds
    URBANOS_* variables."""
    url = f"sqlite:///{store}" if isinstance(store, Path) else store
    env = {**os.environ, "URBANOS_STORE": url, "URBANOS_PORT": str(port),
           "URBANOS_LOG_LEVEL": "warning", "URBANOS_MAX_BODY_BYTES": str(8 * 1024 * 1024),
           **(settings or {})}
    proc = subprocess.Popen([sys.executable, "-m", "urbanos.cli", "serve"], env=env)
    wait_until_up(f"http://127.0.0.1:{port}/health", proc)
    return proc


def start_bare(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port),
         "--log-level", "warning", "--no-access-log"], cwd=ROOT,
    )
    wait_until_up(f"http://127.0.0.1:{port}/", proc)
    return proc


def preload(base: str, n: int) -> float:
    """n Stellio entities in 10 types, by batch upsert; returns entities per second."""
    start = time.perf_counter()
    with httpx.Client(base_url=base, timeout=120) as c:
        for first in range(1, n + 1, 1000):
            batch = [stellio_entity(i) for i in range(first, min(n, first + 999) + 1)]
            c.post("/ngsi-ld/v1/entityOperations/upsert", json=batch).raise_for_status()
    return n / (time.perf_counter() - start)


def run_wrk(base: str, script: str, seconds: int, connections: int,
            headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One wrk run of ``script``; ``headers`` (given: even empty) go on every request, by
    the same Lua wrapper in every case so that the load generator's work is alike."""
    parts = [(HERE / "wrk" / name).read_text() for name in ("common.lua", script, "report.lua")]
    if headers is not None:
        pairs = ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
        parts.insert(0, WITH_HEADERS.replace("BENCH_HEADERS", "{" + pairs + "}"))
    text = "\n".join(parts)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(text)
    try:
        out = subprocess.run(
            ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "30s",
             "-s", f.name, base],
            capture_output=True, text=True, check=True,
        ).stdout
    finally:
        os.unlink(f.name)
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


#: wraps wrk.format so that every request carries the headers of the table
WITH_HEADERS = """
local bench_headers = BENCH_HEADERS
local bench_format = wrk.format
wrk.format = function(method, path, headers, body)
  local all = {}
  for k, v in pairs(headers or {}) do all[k] = v end
  for k, v in pairs(bench_headers) do all[k] = v end
  return bench_format(method, path, all, body)
end
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--only", help="run only scenarios whose name contains this")
    parser.add_argument("--stores", default="sqlite,postgres",
                        help="comma-separated: sqlite, postgres (skipped if unreachable)")
    parser.add_argument("--postgres", default=os.environ.get(
        "URBANOS_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL database to create the bench database from")
    parser.add_argument("--skip-extra", action="store_true",
                        help="skip the suites (temporal, notifications, memory, durability, "
                             "access control)")
    parser.add_argument("--suites", default=",".join(SUITES),
                        help=f"comma-separated suites to run after the scenarios: "
                             f"{', '.join(SUITES)} (default: all)")
    parser.add_argument("--reuse-extra", action="store_true",
                        help="report the latest temporal and notification results, not new runs")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite docs/benchmarks.md from the latest saved results, run nothing")
    args = parser.parse_args()
    if args.report_only:
        saved = sorted((HERE / "results").glob("[0-9]*.json"))
        if not saved:
            raise SystemExit("no saved results under bench/results: run `make bench` first")
        run = json.loads(saved[-1].read_text())  # results, time and commit
        args.saved_when, args.saved_commit = run["when"], run["commit"]
        write_report(run["results"], args, _extras(latest, args.suites), save=False)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    os.environ["BENCH_ENTITIES"] = str(args.entities)
    results: list[dict[str, Any]] = []
    bare_port = free_port()
    bare = start_bare(bare_port)
    try:
        r = run_wrk(f"http://127.0.0.1:{bare_port}", "bare.lua", args.seconds, 32)
        results.append({**r, "scenario": "ceiling: bare endpoint, same HTTP stack", "unit": 1})
    finally:
        bare.terminate()
        bare.wait(10)
    raw = executemany_rows_per_second()
    results.append({"scenario": "ceiling: SQLite executemany of the same rows",
                    "store": "sqlite", "rps": raw, "unit": 1, "p50_ms": 0, "p95_ms": 0, "p99_ms": 0,
                    "errors": 0, "requests": 0})
    for store in args.stores.split(","):
        if store == "postgres":
            raw_pg = postgres_rows_per_second(args.postgres)
            if raw_pg is None:
                print(f"no PostgreSQL at {args.postgres}: skipping the PostgreSQL runs")
                continue
            results.append({"scenario": "ceiling: PostgreSQL executemany of the same rows",
                            "store": "postgres", "rps": raw_pg, "unit": 1, "p50_ms": 0,
                            "p95_ms": 0, "p99_ms": 0, "errors": 0, "requests": 0})
        with broker_store(store, args.postgres) as url:
            results.extend(run_scenarios(store, url, args))
    extra = {} if args.skip_extra else _extras(latest if args.reuse_extra else run_suite,
                                               args.suites)
    write_report(results, args, extra)


def _extras(suite: Callable[[str], list[dict[str, Any]]], chosen: str | None = None
            ) -> dict[str, list[dict[str, Any]]]:
    """The suites named in ``chosen`` (comma-separated), each as ``suite`` gives it."""
    names = set(SUITES) if chosen is None else {n.strip() for n in chosen.split(",") if n.strip()}
    unknown = names - set(SUITES)
    if unknown:
        raise SystemExit(f"unknown suite(s) {', '.join(sorted(unknown))}; "
                         f"expected some of {', '.join(SUITES)}")
    return {title: suite(name) for name, title in SUITES.items() if name in names}


RSS_TITLE = "Memory: broker RSS with 1,000,000 entities stored (SQLite)"
DURABILITY_TITLE = "Durability: SQLite synchronous=FULL (the default) beside NORMAL"
AUTH_TITLE = "Access control overhead"
FEDERATION_TITLE = "Federation: a query through one registration"
#: the suites run after the scenarios (``python -m bench.<name>``), by name: their titles
SUITES = {
    "temporal": "Temporal (10 entities x 100,000 instances, Stellio's scenario)",
    "notifications": "Notifications (update -> delivery)",
    "rss": RSS_TITLE,
    "durability": DURABILITY_TITLE,
    "auth": AUTH_TITLE,
    "federation": FEDERATION_TITLE,
}
#: the access-control target: a reader's token or key costs at most this share of the
#: throughput of URBANOS_AUTH=none
AUTH_MAX_LOSS = 0.15


#: the federation target: federated p95 <= FACTOR x local p95 + SLACK_MS
FEDERATION_FACTOR, FEDERATION_SLACK_MS = 2.0, 5.0


def federation_verdict(rows: list[dict[str, Any]]) -> str:
    """Each federated row of ``bench.federation`` against its p95 limit."""
    held = [r for r in rows if "p95_limit_ms" in r]
    if not held:
        return "Target: not run."
    missed = [r for r in held if r["p95_ms"] > r["p95_limit_ms"]]
    parts = "; ".join(f"{r['scenario']} p95 {r['p95_ms']:.1f} ms (limit {r['p95_limit_ms']:.1f})"
                      for r in held)
    return (f"Target (federated p95 <= {FEDERATION_FACTOR:g} x local p95 + "
            f"{FEDERATION_SLACK_MS:g} ms): **{'missed' if missed else 'met'}**: {parts}.")


def auth_verdict(rows: list[dict[str, Any]]) -> str:
    """The access-control rows against their target: the worst held-to-target row."""
    held = [r for r in rows if r.get("held_to_target") and not r["scenario"].endswith(": none")]
    if not held:
        return "Target: not run."
    worst = min(held, key=lambda r: r["pct_of_none"])
    met = worst["pct_of_none"] >= 100 * (1 - AUTH_MAX_LOSS)
    return (f"Target (a reader's OIDC token or API key at most {AUTH_MAX_LOSS:.0%} below "
            f"`none`, retrieve and query): **{'met' if met else 'missed'}**; the worst is "
            f"{worst['pct_of_none']:.0f}% of `none` ({worst['scenario']}).")
#: the targets of the speed issue, on the SQLite store, one broker process:
#: (target, scenario, least per second, most p95 ms, least fraction of a ceiling)
TARGETS: list[tuple[str, str, float, float | None, tuple[str, float] | None]] = [
    ("retrieve by id >= 10,000 req/s and >= 0.35 x bare endpoint", "retrieve entity by id",
     10_000, None, ("ceiling: bare endpoint, same HTTP stack", 0.35)),
    ("partial attribute update >= 4,000/s", "partial attribute update (1,000 entities)",
     4_000, None, None),
    ("create >= 4,000/s", "create entity", 4_000, None, None),
    ("query type + q over 100k >= 1,500/s at p95 <= 30 ms",
     "query type + property value (100k entities)", 1_500, 30.0, None),
    ("batch upsert >= 50,000 entities/s and >= 0.15 x raw executemany",
     "batch upsert, 1,000 entities per request", 50_000, None,
     ("ceiling: SQLite executemany of the same rows", 0.15)),
]


def target_table(results: list[dict[str, Any]], extra: dict[str, list[dict[str, Any]]]) -> str:
    """Each target of the speed issue against this run: measured, and met or missed."""
    def per_s(scenario: str) -> tuple[float, dict[str, Any]] | None:
        for r in results:
            if r["scenario"] == scenario and r.get("store", "sqlite") == "sqlite":
                return r["rps"] * r["unit"], r
        return None

    lines = ["| target (SQLite, one broker process) | measured | status |", "|---|---|---|"]
    for what, scenario, least, p95, ceiling in TARGETS:
        found = per_s(scenario)
        if found is None:
            lines.append(f"| {what} | not run | |")
            continue
        rate, r = found
        met = rate >= least and (p95 is None or r["p95_ms"] <= p95)
        measured = f"{rate:,.0f}/s" + (f", p95 {r['p95_ms']:.1f} ms" if p95 is not None else "")
        if ceiling is not None and (top := per_s(ceiling[0])) is not None:
            ratio = rate / top[0]
            met = met and ratio >= ceiling[1]
            measured += f", {ratio:.2f} x"
        lines.append(f"| {what} | {measured} | {'met' if met else 'missed'} |")
    rss = [row["rss_mb"] for row in extra.get(RSS_TITLE, []) if row.get("rss_mb") is not None]
    if rss:
        status = "met" if max(rss) <= 250 else "missed"
        lines.append(f"| broker RSS <= 250 MB with 1,000,000 entities | {max(rss):.0f} MB at "
                     f"most | {status} |")
    held = [r for r in extra.get(AUTH_TITLE, []) if r.get("held_to_target")
            and not r["scenario"].endswith(": none")]
    if held:
        worst = min(r["pct_of_none"] for r in held)
        status = "met" if worst >= 100 * (1 - AUTH_MAX_LOSS) else "missed"
        lines.append(f"| reads with a reader's OIDC token or API key >= "
                     f"{1 - AUTH_MAX_LOSS:.0%} of `none` | {worst:.0f}% at worst | {status} |")
    return "\n".join(lines)


@contextlib.contextmanager
def broker_store(store: str, postgres: str) -> Iterator[str]:
    """A fresh, empty store for one run: a SQLite file, or a PostgreSQL database created
    for the run and dropped after it."""
    if store == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    name = f"urbanos_bench_{os.getpid()}"
    with psycopg.connect(postgres, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield conninfo_to_url(postgres, name)
    finally:
        with psycopg.connect(postgres, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def conninfo_to_url(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


def run_scenarios(
    store: str, url: str, args: argparse.Namespace,
    chosen: Callable[[str], bool] | None = None, settings: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Preload, then every scenario (every ``chosen`` one) against one broker on ``url``."""
    out: list[dict[str, Any]] = []
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    broker = start_broker(port, url, settings)
    chosen = chosen or (lambda name: not args.only or args.only in name)
    try:
        load_rate = preload(base, args.entities)
        print(f"{store}: preloaded {args.entities} entities at {load_rate:,.0f}/s")
        for name, script, connections, unit in SCENARIOS:
            if not chosen(name):
                continue
            r = run_wrk(base, script, args.seconds, connections)
            r.update(scenario=name, store=store, unit=unit,
                     rss_mb=round(rss_mb(broker.pid), 1))
            out.append(r)
            print(json.dumps(r))
    finally:
        stop(broker)
    return out


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a broker: it first finishes the requests it holds (a loaded machine may take a
    while over a few batches), and is killed if that takes too long."""
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_suite(name: str) -> list[dict[str, Any]]:
    """Run ``python -m bench.<name>`` and read the JSON lines it wrote."""
    before = set((HERE / "results").glob(f"{name}-*.jsonl"))
    subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=ROOT, check=True)
    written = sorted(set((HERE / "results").glob(f"{name}-*.jsonl")) - before)
    if not written:
        return []
    return [json.loads(line) for line in written[-1].read_text().splitlines() if line.strip()]


def save_lines(name: str, lines: list[dict[str, Any]], folder: Path | None = None) -> Path:
    """Write a suite's results as ``<folder>/<name>-<timestamp>.jsonl``, where ``latest``
    and ``run_suite`` read them back."""
    folder = folder or HERE / "results"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    path = folder / f"{name}-{stamp}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def latest(name: str) -> list[dict[str, Any]]:
    """The JSON lines of the newest ``bench/results/<name>-*.jsonl``."""
    found = sorted((HERE / "results").glob(f"{name}-*.jsonl"))
    if not found:
        return []
    return [json.loads(line) for line in found[-1].read_text().splitlines() if line.strip()]


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of JSON-line results: the scenario, then every numeric column."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k, v in row.items() if isinstance(v, int | float) and k not in columns]
    head = "| scenario | " + " | ".join(columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    body = [
        f"| {r.get('scenario', '')} | "
        + " | ".join(_cell(r.get(c)) for c in columns) + " |"
        for r in rows
    ]
    return "\n".join([head, rule, *body])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    return "" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def head_commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=ROOT).stdout.strip()


def write_report(
    results: list[dict[str, Any]], args: argparse.Namespace,
    extra: dict[str, list[dict[str, Any]]] | None = None, *, save: bool = True,
) -> None:
    commit = head_commit()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    if save:
        (HERE / "results").mkdir(exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        payload = {"when": when, "commit": commit, "results": results}
        (HERE / "results" / f"{stamp}.json").write_text(json.dumps(payload, indent=2))
    else:  # the saved run's own time and commit
        when, commit = args.saved_when, args.saved_commit
    rows = []
    for r in results:
        per_s = r["rps"] * r["unit"]
        unit = "entities/s" if r["unit"] > 1 else ("rows/s" if "executemany" in r["scenario"]
                                                   else "req/s")
        rss = f"{r['rss_mb']:.0f}" if "rss_mb" in r else ""
        rows.append(
            f"| {r['scenario']} | {r.get('store', '')} | {per_s:,.0f} {unit} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
            f"| {r['p99_ms']:.1f} | {r['errors']} | {rss} |"
        )
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "benchmarks.md").write_text(
        f"""# Benchmarks

Run: {when}, commit {commit}. Machine: {machine}. The broker (one process, on the store
of the row: a SQLite file, or the local PostgreSQL 15 server, which shares the machine too)
and the load generator (wrk, 1 thread) share the machine; {args.entities:,} Stellio-shaped
entities in 10 types are preloaded into a fresh store; {args.seconds} s per scenario.
Regenerate with `make bench`. Read figures as ratios: the ceiling rows were measured in
the same run.

| scenario | store | throughput | p50 ms | p95 ms | p99 ms | errors | broker RSS MB |
|---|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

## Targets

{target_table(results, extra or {})}
"""
        + "".join(section(title, rows, VERDICTS[title](rows) + "\n" if title in VERDICTS else "")
                  for title, rows in (extra or {}).items())
    )


#: the suites held to a target: the verdict printed under their title
VERDICTS = {AUTH_TITLE: auth_verdict, FEDERATION_TITLE: federation_verdict}

#: what a suite's table needs said beside it
NOTES = {
    DURABILITY_TITLE: (
        "The write scenarios over HTTP (wrk, as above) on a fresh SQLite file, and single-entity\n"
        "writes straight through the store (no HTTP, so the commit shows), once with each\n"
        "setting, the two alternated round by round so that the noise of the shared machine\n"
        "falls on both alike; figures are medians over the rounds. `full_pct_of_normal` is\n"
        "FULL's rate in % of NORMAL's: what syncing the WAL at every commit costs. One write at a time\n"
        "pays one sync each; writes waiting together share it (group commit).\n"
        "Regenerate with `python -m bench.durability --report`.\n"
    ),
    AUTH_TITLE: (
        "The read scenarios above on one preloaded SQLite file, served by one broker per\n"
        "configuration (side by side, one measured at a time), each request carrying the\n"
        "configuration's credential: none; a bearer token of a local OpenID Connect issuer\n"
        "with the reader role; a reader's API key; a token with no role whose group a grant\n"
        "gives read on the ten types (every entity goes through the policy's View), and the\n"
        "same with a grant hiding one attribute. The configurations alternate round by\n"
        "round; figures are medians over the rounds, `pct_of_none` the median rate in % of\n"
        "`none`'s in the same run. Regenerate with `python -m bench.auth --report`.\n"
    ),
    FEDERATION_TITLE: (
        "Two brokers on one SQLite file each: the source holds the entities, the forwarder\n"
        "holds none and one inclusive registration naming the source for their ten types.\n"
        "The read scenarios above, straight to the source (`local`) and through the\n"
        "forwarder (`federated`: local lookup, forward, validate and merge, render). The\n"
        "two alternate round by round; figures are medians over the rounds, `pct_of_local`\n"
        "the federated rate in % of the local one. Regenerate with\n"
        "`python -m bench.federation --report`.\n"
    ),
}


def replace_section(title: str, rows: list[dict[str, Any]], more: str) -> None:
    """Put a suite's section into docs/benchmarks.md, in place of its previous one."""
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text()
    start = text.find(f"\n## {title}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + (text[end:] if end >= 0 else "")
    path.write_text(text.rstrip("\n") + "\n" + section(title, rows, more))


def section(title: str, rows: list[dict[str, Any]], more: str = "") -> str:
    """A suite's part of docs/benchmarks.md: its title, what to know, its table."""
    note = "\n".join(n for n in (NOTES.get(title, ""), more) if n)
    return f"\n## {title}\n\n" + (f"{note}\n" if note else "") + f"{table(rows)}\n"


if __name__ == "__main__":
    main()
