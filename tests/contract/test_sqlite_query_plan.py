"""The SQLite store's query plans (one filter drives, the others are checked per entity, or
none drives and entities are scanned in pk order) all return what the reference store does."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from urbanos.core.query import parse_q, parse_type_expr
from urbanos.core.selection import EntityQuery
from urbanos.storage.base import EntityStore, Write
from urbanos.storage.memory import MemoryStore
from urbanos.storage.sqlite import SqliteStore, q_sql
from urbanos.storage.sqlite import entities as sqlite_entities
from urbanos.types import JSONObject

X = "https://ex.org/"


def sensor(n: int) -> JSONObject:
    attrs: JSONObject = {
        X + "level": [{"type": "Property", "value": n % 50}],
        X + "zone": [{"type": "Property", "value": f"z{n % 4}"}],
    }
    if n % 3 == 0:
        attrs[X + "owner"] = [{"type": "Relationship", "object": f"urn:p:{n % 5}"}]
    return {"id": f"urn:s:{n:04d}", "type": [X + ("Sensor" if n % 2 else "Gauge")],
            "attrs": attrs}


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[EntityStore, EntityStore]]:
    reference, sqlite = MemoryStore(), SqliteStore(tmp_path / "plan.db")
    for s in (reference, sqlite):
        await s.open()
        await s.apply("t", [Write("put", f"urn:s:{n:04d}", sensor(n)) for n in range(600)])
    yield reference, sqlite
    for s in (reference, sqlite):
        await s.close()


QUERIES = [
    ("Sensor", 'level>40;zone=="z1"'),
    ("Sensor", 'zone=="z3"'),
    ("Gauge", "level<3|zone==\"z2\""),
    ("Sensor,Gauge", "owner==\"urn:p:2\";level>=10"),
    (None, "level==7"),
    ("Gauge", None),
]


@pytest.mark.parametrize("caps", [(1_000, 4_000, 16_000), (5, 100), (1, 2)],
                         ids=["one-drives", "second-probe", "scan"])
@pytest.mark.parametrize(("types", "q"), QUERIES)
@pytest.mark.parametrize(("limit", "offset"), [(20, 0), (7, 30)])
async def test_every_plan_selects_what_the_reference_store_selects(
    stores: tuple[EntityStore, EntityStore], monkeypatch: pytest.MonkeyPatch,
    caps: tuple[int, ...], types: str | None, q: str | None, limit: int, offset: int,
) -> None:
    monkeypatch.setattr(sqlite_entities, "PROBE_CAPS", caps)
    query = EntityQuery(
        types=parse_type_expr(types, lambda t: X + t) if types else None,
        q=parse_q(q, lambda a: X + a) if q else None,
        limit=limit, offset=offset, count=True,
    )
    reference, sqlite = stores
    want, got = await reference.query("t", query), await sqlite.query("t", query)
    assert got.total == want.total
    assert want.total, "every query selects something"
    assert [e["id"] for e in got.entities] == [e["id"] for e in want.entities]


def test_probe_counts_are_reused_exact_or_as_lower_bounds(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "probe.db")
    conn.execute("CREATE TABLE t (pk INTEGER PRIMARY KEY, v INTEGER)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [(n % 2,) for n in range(100)])
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    f = q_sql.Filter.of("t", "v = ?", [1])  # 50 rows
    counts = sqlite_entities.ProbeCounts()
    assert counts.count(conn, f, 10) == 10 and len(statements) == 1  # "at least 10"
    assert counts.count(conn, f, 5) == 5 and len(statements) == 1
    assert counts.count(conn, f, 100) == 50 and len(statements) == 2  # probed again: exact
    assert counts.count(conn, f, 20) == 20 and counts.count(conn, f, 80) == 50
    assert len(statements) == 2
    assert counts.count(conn, q_sql.Filter.of("t", "v = ?", [0]), 100) == 50
    assert len(statements) == 3  # other parameters, another probe
    stale = sqlite_entities.ProbeCounts(ttl=0)
    stale.count(conn, f, 100)
    stale.count(conn, f, 100)
    assert len(statements) == 5


async def test_a_file_of_the_earlier_shape_is_upgraded_on_open(tmp_path: Path) -> None:
    """Value rows written before they carried the entity's types are rebuilt once, and
    queries over them select what they did."""
    path = tmp_path / "old.db"
    store = SqliteStore(path)
    await store.open()
    await store.apply("t", [Write("put", f"urn:s:{n:04d}", sensor(n)) for n in range(60)])
    await store.close()
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(
        """DROP INDEX attr_values_num_type; DROP INDEX attr_values_str_type;
           DROP INDEX attr_values_pk_attr;
           CREATE TABLE v AS SELECT DISTINCT tenant, attr, num, str, pk FROM attr_values;
           DROP TABLE attr_values; ALTER TABLE v RENAME TO attr_values;
           CREATE INDEX attr_values_num_pk ON attr_values (tenant, attr, num, pk);
           CREATE INDEX attr_values_by_pk ON attr_values (pk, attr);"""
    )
    old.close()
    reference, upgraded = MemoryStore(), SqliteStore(path)
    await reference.apply("t", [Write("put", f"urn:s:{n:04d}", sensor(n)) for n in range(60)])
    await upgraded.open()
    try:
        query = EntityQuery(types=parse_type_expr("Sensor", lambda t: X + t),
                            q=parse_q("level>40", lambda a: X + a), count=True)
        want, got = await reference.query("t", query), await upgraded.query("t", query)
        assert want.total and [e["id"] for e in got.entities] == [e["id"] for e in want.entities]
        conn = sqlite3.connect(path)
        indexes = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE tbl_name = 'attr_values' AND type = 'index'")}
        assert indexes == {"attr_values_num_type", "attr_values_str_type", "attr_values_pk_attr"}
        assert conn.execute("SELECT count(*) FROM attr_values WHERE type IS NULL").fetchone() == (0,)
        conn.close()
    finally:
        await upgraded.close()
