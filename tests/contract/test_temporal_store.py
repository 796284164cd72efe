"""What every temporal store does the same way: the memory store is the reference, and the
SQLite store's SQL aggregation must agree with its plain-list maths."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import postgres_enabled, reset_postgres
from urbanos.core.temporal import (
    SCOPE,
    Aggregation,
    NewInstance,
    format_instant,
    instance_number,
    parse_duration,
    parse_temporal_query,
    to_micros,
)
from urbanos.core.temporal_render import EntityHistory
from urbanos.storage import open_stores
from urbanos.storage.base import EntityStore, Write
from urbanos.storage.postgres.temporal import PostgresTemporalStore
from urbanos.storage.temporal import (
    ALL_DATASETS,
    Directive,
    HistoryRequest,
    TemporalStore,
)
from urbanos.types import JSONObject

X = "https://ex.org/"
T = "urn:t"
Pair = tuple[EntityStore, TemporalStore]


async def open_pair(kind: str, path: Path, url: str = "") -> Pair:
    stores = open_stores(
        {"memory": "memory://", "sqlite": f"sqlite:///{path}/t.db"}.get(kind, url), readers=1
    )
    await stores.open()
    return stores.entities, stores.temporal


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pair]:
    url = request.getfixturevalue("postgres_database") if request.param == "postgres" else ""
    store, history = await open_pair(request.param, tmp_path, url)
    yield store, history
    await history.close()
    await store.close()
    if url:
        reset_postgres(url)


def stamp(second: int) -> str:
    return format_instant(to_micros("2024-05-01T00:00:00Z") + second * 1_000_000)


def entity(eid: str, at: str, scope: list[str] | None = None, **values: Any) -> JSONObject:
    attrs = {X + k: [{"type": "Property", "value": v, "observedAt": at, "createdAt": at,
                      "modifiedAt": at}] for k, v in values.items()}
    out: JSONObject = {"id": eid, "type": [X + "V"], "attrs": attrs, "createdAt": at,
                       "modifiedAt": at}
    if scope:
        out["scope"] = scope
    return out


def everything(**fields: Any) -> HistoryRequest:
    return HistoryRequest(query=parse_temporal_query(), limit=1000, **fields)


async def one(history: TemporalStore, request: HistoryRequest, eid: str = "urn:e:1",
              ) -> EntityHistory:
    (found,) = await history.history(T, [eid], request)
    return found


async def test_entity_writes_record_history(pair: Pair) -> None:
    store, history = pair
    first = entity("urn:e:1", stamp(0), scope=["/a"], speed=1, fuel=10)
    await store.apply(T, [Write("put", "urn:e:1", first)])
    second = entity("urn:e:1", stamp(5), scope=["/a"], speed=2)
    second["attrs"][X + "fuel"] = first["attrs"][X + "fuel"]
    await store.apply(T, [Write("put", "urn:e:1", second, before=first)])
    await store.apply(T, [Write("delete", "urn:e:1", before=second)])
    found = await one(history, HistoryRequest(query=parse_temporal_query(
        timeproperty="createdAt"), limit=100))
    values = {s.attr: [i.get("value") for i in s.instances] for s in found.series}
    assert values == {X + "speed": [1, 2, "urn:ngsi-ld:null"],
                      X + "fuel": [10, "urn:ngsi-ld:null"], SCOPE: [["/a"], []]}
    header = await history.entity(T, "urn:e:1")
    assert header is not None and header.deleted_at is not None
    ids = {i["instanceId"] for s in found.series for i in s.instances}
    assert len(ids) == 7 and all(instance_number(i) for i in ids)


async def test_window_limit_and_last_n(pair: Pair) -> None:
    store, history = pair
    before = None
    for second in range(30):
        doc = entity("urn:e:1", stamp(second), speed=second)
        await store.apply(T, [Write("put", "urn:e:1", doc, before=before)])
        before = doc
    after = parse_temporal_query("after", stamp(10))
    page = await one(history, HistoryRequest(query=after, limit=5))
    (speed,) = page.series
    assert [i["value"] for i in speed.instances] == [10, 11, 12, 13, 14] and speed.truncated
    last = parse_temporal_query("between", stamp(10), stamp(20), last_n="3")
    (speed,) = (await one(history, HistoryRequest(query=last, limit=5))).series
    assert [i["value"] for i in speed.instances] == [17, 18, 19] and not speed.truncated
    over = parse_temporal_query("before", stamp(20), last_n="8")
    (speed,) = (await one(history, HistoryRequest(query=over, limit=5))).series
    assert [i["value"] for i in speed.instances] == [15, 16, 17, 18, 19] and speed.truncated
    assert await history.with_instances(T, ["urn:e:1"], HistoryRequest(query=after)) == {
        "urn:e:1"}
    late = parse_temporal_query("after", stamp(100))
    assert await history.with_instances(T, ["urn:e:1"], HistoryRequest(query=late)) == set()


async def test_explicit_instances_replace_the_same_observation(pair: Pair) -> None:
    store, history = pair
    doc = entity("urn:e:1", stamp(0), speed=1)
    w = Write("put", "urn:e:1", doc)
    explicit = [NewInstance(X + "speed", {"type": "Property", "value": v, "observedAt": stamp(s),
                                          "createdAt": stamp(0), "modifiedAt": stamp(0)})
                for v, s in ((1, 0), (2, 1))]
    history.directives.attach(w, Directive(explicit=explicit))
    await store.apply(T, [w])
    w2 = Write("put", "urn:e:1", doc, before=doc)
    fix = NewInstance(X + "speed", {"type": "Property", "value": 20, "observedAt": stamp(1),
                                    "createdAt": stamp(2), "modifiedAt": stamp(2)})
    history.directives.attach(w2, Directive(explicit=[fix]))
    await store.apply(T, [w2])
    (speed,) = (await one(history, everything())).series
    assert [i["value"] for i in speed.instances] == [1, 20]


async def test_purges_and_instance_edits(pair: Pair) -> None:
    store, history = pair
    doc = entity("urn:e:1", stamp(0), speed=1, fuel=2)
    doc["attrs"][X + "fuel"].append({"type": "Property", "value": 3, "datasetId": "urn:d:1",
                                     "observedAt": stamp(0)})
    await store.apply(T, [Write("put", "urn:e:1", doc)])
    names = await history.series_names(T, "urn:e:1")
    assert names == {(X + "speed", None), (X + "fuel", None), (X + "fuel", "urn:d:1")}
    assert await history.delete_series(T, "urn:e:1", X + "fuel", "urn:d:1")
    assert not await history.delete_series(T, "urn:e:1", X + "fuel", "urn:d:1")
    (speed,) = [s for s in (await one(history, everything())).series if s.attr == X + "speed"]
    number = instance_number(speed.instances[0]["instanceId"])
    assert number is not None

    def change(old: JSONObject) -> JSONObject:
        return {**old, "value": 99}

    assert await history.update_instance(T, "urn:e:1", X + "speed", number, change)
    assert not await history.update_instance(T, "urn:e:1", X + "fuel", number, change)
    (speed,) = [s for s in (await one(history, everything())).series if s.attr == X + "speed"]
    assert speed.instances[0]["value"] == 99
    assert speed.instances[0]["instanceId"] == f"urn:ngsi-ld:Instance:{number}"
    assert await history.delete_instance(T, "urn:e:1", X + "speed", number)
    assert not await history.delete_instance(T, "urn:e:1", X + "speed", number)
    assert await history.delete_series(T, "urn:e:1", X + "fuel", ALL_DATASETS)
    assert await history.series_names(T, "urn:e:1") == set()
    assert await history.delete_entity(T, "urn:e:1")
    assert await history.entity(T, "urn:e:1") is None


async def test_purge_directive_and_selection(pair: Pair) -> None:
    store, history = pair
    a, b = entity("urn:e:1", stamp(0), speed=1), entity("urn:e:2", stamp(0), speed=2)
    b["type"] = [X + "W"]
    await store.apply(T, [Write("put", "urn:e:1", a), Write("put", "urn:e:2", b)])
    assert [e.id for e in await history.select(T, None, frozenset({X + "W"}))] == ["urn:e:2"]
    assert [e.id for e in await history.select(T, ("urn:e:1",), None)] == ["urn:e:1"]
    assert [e.id for e in await history.select(T, None, None)] == ["urn:e:1", "urn:e:2"]
    gone = Write("delete", "urn:e:1", before=a)
    history.directives.attach(gone, Directive(purge_entity=True))
    await store.apply(T, [gone])
    assert await history.entity(T, "urn:e:1") is None
    window = await history.window(T, ["urn:e:2"], everything(attrs=frozenset({X + "speed"})))
    assert [i["value"] for i in window["urn:e:2"][X + "speed"]] == [2]
    assert await history.tenants() == [T]


async def test_retention_forgets_old_instances(pair: Pair) -> None:
    store, history = pair
    before = None
    for second in range(10):
        doc = entity("urn:e:1", stamp(second), speed=second)
        await store.apply(T, [Write("put", "urn:e:1", doc, before=before)])
        before = doc
    assert await history.expire(T, to_micros(stamp(4))) == 4
    (speed,) = (await one(history, everything())).series
    assert [i["value"] for i in speed.instances] == list(range(4, 10))


def buckets(found: EntityHistory) -> list[tuple[Any, ...]]:
    out = []
    for a in found.aggregated:
        for b in a.buckets:
            out.append((a.attr, a.dataset_id, b.start, b.end, a.truncated,
                        tuple(round(v, 6) if isinstance(v, float) else v
                              for v in b.values.values())))
    return out


@pytest.mark.parametrize("period", ["PT7S", "PT1M", "PT0S", "P1M", "PT1H"])
@pytest.mark.parametrize("window", [(None, None, None), ("after", 30, None),
                                    ("between", 100, 2000), ("before", 3000, None)])
@pytest.mark.parametrize("last_n", [None, "3", "40"])
async def test_sql_aggregation_agrees_with_the_reference(
    tmp_path: Path, period: str, window: tuple[Any, ...], last_n: str | None,
    request: pytest.FixtureRequest,
) -> None:
    rnd = random.Random(f"{period}{window}{last_n}")
    docs: list[JSONObject] = []
    for n in range(120):
        at = stamp(n * 37 + rnd.randint(0, 30))
        value: Any = rnd.choice([rnd.randint(0, 9), rnd.random() * 100, "text", True])
        docs.append(entity("urn:e:1", at, speed=value, count=rnd.randint(0, 3)))
    results = []
    url = request.getfixturevalue("postgres_database") if postgres_enabled() else ""
    for kind in ("memory", "sqlite", "postgres") if url else ("memory", "sqlite"):
        store, history = await open_pair(kind, tmp_path / kind, url)
        writes, before = [], None
        for doc in docs:
            writes.append(Write("put", "urn:e:1", doc, before=before))
            before = doc
        if isinstance(history, PostgresTemporalStore):
            # the history hook alone, in one transaction: what it records is the same
            async with history.db.transaction() as conn:
                for w in writes:
                    await history.record(conn, T, [w])
        else:
            for w in writes:
                await store.apply(T, [w])
        rel, start, end = window
        query = parse_temporal_query(
            rel, stamp(start) if start is not None else None,
            stamp(end) if end is not None else None, last_n=last_n)
        aggregation = Aggregation(("totalCount", "distinctCount", "sum", "avg", "min", "max",
                                   "stddev", "sumsq"), parse_duration(period))
        found = await one(history, HistoryRequest(query=query, limit=25,
                                                  aggregation=aggregation))
        results.append(buckets(found))
        await store.close()
        if kind == "postgres":
            reset_postgres(url)
    for other in results[1:]:  # attribute order is free
        assert sorted(results[0], key=str) == sorted(other, key=str)
    assert results[0], "the window should hold instances"


async def test_series_of_an_earlier_sqlite_file_are_upgraded_on_open(tmp_path: Path) -> None:
    """Series written when attribute and datasetId were spelled out in each row are
    rebuilt once at open, keeping their pks: instances, filters and purges still find them."""
    import sqlite3

    store, history = await open_pair("sqlite", tmp_path)
    doc = entity("urn:e:1", stamp(0), speed=1, fuel=2)
    doc["attrs"][X + "fuel"].append({"type": "Property", "value": 3, "datasetId": "urn:d:1",
                                     "observedAt": stamp(0)})
    await store.apply(T, [Write("put", "urn:e:1", doc)])
    want = await one(history, everything())
    await history.close()
    await store.close()
    old = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    old.executescript(
        """CREATE TABLE s AS SELECT o.pk, o.entity, a.name AS attr, d.name AS dataset
             FROM temporal_series o JOIN names a ON a.id = o.attr JOIN names d ON d.id = o.dataset;
           DROP TABLE temporal_series;
           CREATE TABLE temporal_series (pk INTEGER PRIMARY KEY, entity INTEGER NOT NULL,
             attr TEXT NOT NULL, dataset TEXT NOT NULL, UNIQUE (entity, attr, dataset));
           INSERT INTO temporal_series SELECT * FROM s; DROP TABLE s;"""
    )
    old.close()
    store, history = await open_pair("sqlite", tmp_path)
    try:
        assert await one(history, everything()) == want
        fuel = await one(history, everything(attrs=frozenset({X + "fuel"}),
                                          datasets=frozenset({"urn:d:1"})))
        assert [(s.attr, s.dataset_id) for s in fuel.series] == [(X + "fuel", "urn:d:1")]
        assert await history.delete_series(T, "urn:e:1", X + "fuel", "urn:d:1")
        assert await history.series_names(T, "urn:e:1") == {(X + "speed", None),
                                                            (X + "fuel", None)}
    finally:
        await history.close()
        await store.close()
