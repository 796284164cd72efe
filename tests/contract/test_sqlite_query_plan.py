"""The SQLite store's query plans (one filter drives, the others are checked per entity, or
none drives and entities are scanned in pk order) all return what the reference store does."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from urbanos.core.geo import GeoQuery
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


#: the index tables as earlier versions wrote them: names spelled out, not interned
SPELLED_OUT = """
    DROP INDEX attr_values_num_type; DROP INDEX attr_values_str_type;
    DROP INDEX attr_values_pk_attr;
    CREATE TABLE v AS SELECT o.tenant, a.name AS attr, t.name AS type, o.num, o.str, o.pk
      FROM attr_values o JOIN names a ON a.id = o.attr LEFT JOIN names t ON t.id = o.type;
    DROP TABLE attr_values; ALTER TABLE v RENAME TO attr_values;
    CREATE INDEX attr_values_num_type ON attr_values (tenant, attr, num, type, pk);
    CREATE INDEX attr_values_str_type ON attr_values (tenant, attr, str, type, pk);
    CREATE INDEX attr_values_pk_attr ON attr_values (pk, attr);
    CREATE TABLE t (tenant TEXT NOT NULL, type TEXT NOT NULL, pk INTEGER NOT NULL,
      PRIMARY KEY (tenant, type, pk)) WITHOUT ROWID;
    INSERT INTO t SELECT o.tenant, n.name, o.pk FROM entity_types o JOIN names n ON n.id = o.type;
    DROP TABLE entity_types; ALTER TABLE t RENAME TO entity_types;
    CREATE INDEX entity_types_pk ON entity_types (pk);
    CREATE TABLE a (tenant TEXT NOT NULL, attr TEXT NOT NULL, kind TEXT NOT NULL,
      pk INTEGER NOT NULL, PRIMARY KEY (tenant, attr, pk, kind)) WITHOUT ROWID;
    INSERT INTO a SELECT o.tenant, n.name, k.name, o.pk FROM entity_attrs o
      JOIN names n ON n.id = o.attr JOIN names k ON k.id = o.kind;
    DROP TABLE entity_attrs; ALTER TABLE a RENAME TO entity_attrs;
    CREATE INDEX entity_attrs_pk ON entity_attrs (pk);
    CREATE TABLE g (gid INTEGER PRIMARY KEY, tenant TEXT NOT NULL, pk INTEGER NOT NULL,
      attr TEXT NOT NULL);
    INSERT INTO g SELECT o.gid, o.tenant, o.pk, n.name FROM geo_keys o JOIN names n ON n.id = o.attr;
    DROP TABLE geo_keys; ALTER TABLE g RENAME TO geo_keys;
    CREATE INDEX geo_keys_pk ON geo_keys (pk);
    DROP TABLE names;
"""
#: older still: value rows without the entity's types
UNTYPED_VALUES = """
    DROP INDEX attr_values_num_type; DROP INDEX attr_values_str_type;
    DROP INDEX attr_values_pk_attr;
    CREATE TABLE v AS SELECT DISTINCT tenant, attr, num, str, pk FROM attr_values;
    DROP TABLE attr_values; ALTER TABLE v RENAME TO attr_values;
    CREATE INDEX attr_values_num_pk ON attr_values (tenant, attr, num, pk);
    CREATE INDEX attr_values_by_pk ON attr_values (pk, attr);
"""


def located(n: int) -> JSONObject:
    entity = sensor(n)
    entity["attrs"][X + "location"] = [{"type": "GeoProperty", "value": {
        "type": "Point", "coordinates": [float(n % 10), 1.0]}}]
    return entity


@pytest.mark.parametrize("earlier", [[SPELLED_OUT], [SPELLED_OUT, UNTYPED_VALUES]],
                         ids=["spelled-out names", "untyped values"])
async def test_a_file_of_an_earlier_shape_is_upgraded_on_open(
    tmp_path: Path, earlier: list[str]
) -> None:
    """Index tables written by earlier versions are rebuilt once, and queries, type and
    attribute listings over them answer what they did."""
    path = tmp_path / "old.db"
    writes = [Write("put", f"urn:s:{n:04d}", located(n)) for n in range(60)]
    store = SqliteStore(path)
    await store.open()
    await store.apply("t", writes)
    await store.close()
    old = sqlite3.connect(path, isolation_level=None)
    for script in earlier:
        old.executescript(script)
    old.close()
    reference, upgraded = MemoryStore(), SqliteStore(path)
    await reference.apply("t", writes)
    await upgraded.open()
    try:
        for query in [
            EntityQuery(types=parse_type_expr("Sensor", lambda t: X + t),
                        q=parse_q("level>40", lambda a: X + a), count=True),
            EntityQuery(q=parse_q("zone==\"z1\"", lambda a: X + a), attrs=[X + "owner"],
                        count=True),
            EntityQuery(geo=GeoQuery(
                georel="within", geometry="Polygon",
                coordinates=[[[-0.5, 0.0], [3.5, 0.0], [3.5, 2.0], [-0.5, 2.0], [-0.5, 0.0]]],
                geoproperty=X + "location"), count=True),
        ]:
            want, got = await reference.query("t", query), await upgraded.query("t", query)
            assert want.total and [e["id"] for e in got.entities] == [
                e["id"] for e in want.entities]
        assert _listed(await upgraded.types("t")) == _listed(await reference.types("t"))
        assert _listed(await upgraded.attributes("t")) == _listed(
            await reference.attributes("t"))
        conn = sqlite3.connect(path)
        indexes = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE tbl_name = 'attr_values' AND type = 'index'")}
        assert indexes == {"attr_values_num_type", "attr_values_str_type", "attr_values_pk_attr"}
        assert conn.execute("SELECT count(*) FROM attr_values WHERE type IS NULL").fetchone() == (0,)
        assert conn.execute("SELECT typeof(attr) FROM entity_attrs LIMIT 1").fetchone() == (
            "integer",)
        conn.close()
    finally:
        await upgraded.close()


def _listed(infos: list[Any]) -> list[Any]:
    """Type or attribute infos, comparable: sets and dicts in sorted order."""
    def plain(v: Any) -> Any:
        if isinstance(v, set):
            return sorted(v)
        if isinstance(v, dict):
            return sorted((k, plain(x)) for k, x in v.items())
        return v

    return sorted(tuple(plain(getattr(i, f.name)) for f in dataclasses.fields(i)) for i in infos)
