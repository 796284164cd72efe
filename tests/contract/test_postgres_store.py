"""PostgreSQL specifics: a schema per tenant made live, several nodes on one database, and
query results identical to the reference (memory) store, pushdown included."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import reset_postgres
from tests.contract import test_store_query as shared
from urbanos.core.geo import parse_geoq
from urbanos.core.model import LOCATION
from urbanos.core.query import parse_q
from urbanos.core.query.parse import parse_scope_q, parse_type_expr
from urbanos.core.selection import EntityQuery, EntitySelector
from urbanos.errors import AlreadyExists
from urbanos.storage.base import EntityStore, Write
from urbanos.storage.memory import MemoryStore
from urbanos.storage.postgres import PostgresStore, schema_name
from urbanos.types import JSONObject

X = "https://ex.org/"


def expand(term: str) -> str:
    return term if ":" in term else X + term


@pytest.fixture
def pg_url(postgres_database: str) -> Iterator[str]:
    yield postgres_database
    reset_postgres(postgres_database)


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[EntityStore]:
    """Named like test_store_query's fixture, so its shared tests run here on PostgreSQL."""
    s = PostgresStore(pg_url)
    await s.open()
    yield s
    await s.close()


# the store-semantics suite of test_store_query, collected again with the fixture above
test_linked_q_follows_relationships_level_by_level = (
    shared.test_linked_q_follows_relationships_level_by_level
)
test_order_applies_before_paging = shared.test_order_applies_before_paging
test_selector_ids_take_precedence_over_id_pattern = (
    shared.test_selector_ids_take_precedence_over_id_pattern
)


@pytest.fixture
async def two_nodes(pg_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    await asyncio.gather(a.open(), b.open())  # migrations race: the advisory lock decides
    yield a, b
    await asyncio.gather(a.close(), b.close())


def thing(eid: str, **attrs: Any) -> JSONObject:
    return {
        "id": eid,
        "type": [X + "Thing"],
        "attrs": {X + k: [{"type": "Property", "value": v}] for k, v in attrs.items()},
    }


# --------------------------------------------------------------------------- tenants


async def test_a_tenant_gets_its_schema_on_first_write_and_every_node_sees_it(
    two_nodes: tuple[PostgresStore, PostgresStore], pg_url: str
) -> None:
    a, b = two_nodes
    tenant = 'city "A"; DROP SCHEMA urbanos CASCADE; --'
    assert not await a.tenant_exists(tenant) and not await b.tenant_exists(tenant)
    await a.apply(tenant, [Write("put", "urn:t:1", thing("urn:t:1", n=1))])
    assert await b.tenant_exists(tenant)  # a miss re-reads the catalog: no restart
    assert (await b.get(tenant, "urn:t:1")) == thing("urn:t:1", n=1)
    assert await b.get("", "urn:t:1") is None  # tenants are isolated
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT t.schema, count(m.version) FROM urbanos.tenants t "
            "JOIN urbanos.schema_migrations m ON m.schema = t.schema WHERE t.name = %s "
            "GROUP BY t.schema",
            (tenant,),
        ).fetchone()
    assert row is not None and row[0] == schema_name(tenant) and row[1] >= 1


async def test_schema_names_are_safe_and_distinct() -> None:
    names = ["", "a", "A", "a b", "a_b", "ä", "x" * 200, '"; DROP TABLE x; --']
    schemas = [schema_name(n) for n in names]
    assert len(set(schemas)) == len(names)
    assert all(len(s.encode()) <= 63 and s.replace("_", "").isalnum() for s in schemas)


async def test_a_failed_first_write_leaves_no_tenant(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    try:

        def hook_fails(*_: object) -> Any:
            raise RuntimeError("outbox full")

        async def hook(conn: psycopg.AsyncConnection, tenant: str, writes: list[Write]) -> None:
            hook_fails()

        store.write_hooks.append(hook)
        with pytest.raises(RuntimeError):
            await store.apply("t1", [Write("put", "urn:t:1", thing("urn:t:1"))])
        assert not await store.tenant_exists("t1")
    finally:
        await store.close()


async def test_write_hooks_run_in_the_transaction_with_the_tenant_search_path(
    pg_url: str,
) -> None:
    store = PostgresStore(pg_url)
    await store.open()
    seen: list[tuple[str, list[str], int]] = []

    async def hook(conn: psycopg.AsyncConnection, tenant: str, writes: list[Write]) -> None:
        cur = await conn.execute("SELECT count(*) FROM entities")  # unqualified: tenant's
        row = await cur.fetchone()
        assert row is not None
        seen.append((tenant, [w.entity_id for w in writes], row[0]))

    store.write_hooks.append(hook)
    try:
        await store.apply("t2", [Write("put", "urn:a", thing("urn:a"))])
        await store.modify(
            "", ["urn:b"], lambda cur: ([Write("put", "urn:b", thing("urn:b"))], None)
        )
    finally:
        await store.close()
    assert seen == [("t2", ["urn:a"], 1), ("", ["urn:b"], 1)]


# --------------------------------------------------------------------------- several nodes


async def test_concurrent_modify_from_two_nodes_never_loses_an_update(
    two_nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two_nodes
    await a.apply("", [Write("put", "urn:c:1", thing("urn:c:1", n=0))])

    def increment(current: dict[str, JSONObject]) -> tuple[list[Write], None]:
        doc = current["urn:c:1"]
        doc["attrs"][X + "n"][0]["value"] += 1
        return [Write("put", "urn:c:1", doc, before=current["urn:c:1"])], None

    rounds = 40
    await asyncio.gather(
        *(node.modify("", ["urn:c:1"], increment) for _ in range(rounds) for node in (a, b))
    )
    doc = await b.get("", "urn:c:1")
    assert doc is not None and doc["attrs"][X + "n"][0]["value"] == 2 * rounds


async def test_concurrent_creates_of_one_new_id_on_two_nodes_let_exactly_one_win(
    two_nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two_nodes

    def create(n: int) -> Any:
        def plan(current: dict[str, JSONObject]) -> tuple[list[Write], int]:
            if "urn:new:1" in current:
                raise AlreadyExists("urn:new:1")
            return [Write("put", "urn:new:1", thing("urn:new:1", n=n))], n

        return plan

    results = await asyncio.gather(
        *(node.modify("fresh", ["urn:new:1"], create(i)) for i, node in enumerate([a, b] * 5)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, int)]
    assert len(winners) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if not isinstance(r, int))
    doc = await a.get("fresh", "urn:new:1")
    assert doc is not None and doc["attrs"][X + "n"][0]["value"] == winners[0]


async def test_two_nodes_opening_together_apply_each_migration_once(
    two_nodes: tuple[PostgresStore, PostgresStore], pg_url: str
) -> None:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT schema, version, count(*) FROM urbanos.schema_migrations GROUP BY 1, 2"
        ).fetchall()
    assert rows and all(n == 1 for _, _, n in rows)


# --------------------------------------------------------------------------- identical results


def _population(rng: random.Random) -> list[JSONObject]:
    docs: list[JSONObject] = []
    for n in range(120):
        attrs: JSONObject = {
            X + "level": [{"type": "Property", "value": rng.choice([n % 7 + 0.5, n % 5, True])}],
            X + "tags": [{"type": "Property", "value": rng.sample(["a", "b", "c", "d"], n % 3)}],
            X + "when": [{"type": "Property", "value": f"2024-01-0{n % 9 + 1}T00:00:00Z"}],
            X + "bridge": [{"type": "Relationship", "object": f"urn:ngsi-ld:Bridge:{n % 4}"}],
        }
        if n % 3:
            attrs[X + "name"] = [{"type": "Property", "value": f"s{n % 4}"}]
        if n % 5 == 0:
            attrs[X + "level"].append({"type": "Property", "value": 100, "datasetId": "urn:d:1"})
        if n % 4 == 0:
            attrs[X + "label"] = [{"type": "LanguageProperty", "languageMap": {"en": f"s{n % 3}"}}]
        if n % 6 == 1:
            attrs[X + "codes"] = [{"type": "ListProperty", "valueList": [n % 5, "x"]}]
        lon, lat = rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05)
        shapes = [
            {"type": "Point", "coordinates": [lon, lat]},
            {"type": "LineString", "coordinates": [[lon, lat], [lon + 0.02, lat + 0.01]]},
            {
                "type": "Polygon",
                "coordinates": [[[lon, lat], [lon + 0.01, lat], [lon, lat + 0.01], [lon, lat]]],
            },
        ]
        scope = {"scope": [f"/City/D{n % 3}"]} if n % 7 < 3 else {}
        attrs[LOCATION] = [{"type": "GeoProperty", "value": shapes[n % 3 if n % 4 else 0]}]
        docs.append(
            {
                "id": f"urn:ngsi-ld:S:{n:03d}",
                "type": [X + ("S" if n % 2 else "T")],
                "attrs": attrs,
                **scope,
            }
        )
    return docs


Q = [
    "level>3",
    'level>=3.5;name=="s1"',
    'level<2|name=="s2"',
    "level==1.5,2.5",
    "level==2..4",
    "level!=100",
    'name!="s1"',
    "bridge==urn:ngsi-ld:Bridge:2",
    'tags=="a"',
    'tags!="a"',
    "name",
    "!name",
    'name~="s[12]"',
    "when>2024-01-05T00:00:00Z",
    'when=="2024-01-03T00:00:00.000Z"',
    '(level>5|bridge==urn:ngsi-ld:Bridge:1);tags=="c"',
    "level==true",
    'label=="s1"',
    "codes==3",
    'codes=="x"',
    "level>99",
    "level<0",
    "bridge{level}>3",
]
GEO = [
    ("near;maxDistance==2000", "Point", "[0,0]"),
    ("near;minDistance==3000", "Point", "[0.01,0.01]"),
    ("near;maxDistance==500", "Polygon", "[[[0,0],[0.01,0],[0.01,0.01],[0,0]]]"),
    ("within", "Polygon", "[[[-0.03,-0.03],[0.03,-0.03],[0.03,0.03],[-0.03,0.03],[-0.03,-0.03]]]"),
    ("intersects", "LineString", "[[-0.05,0],[0.05,0.001]]"),
    ("contains", "Point", "[0.001,0.001]"),
    (
        "disjoint",
        "Polygon",
        "[[[-0.02,-0.02],[0.02,-0.02],[0.02,0.02],[-0.02,0.02],[-0.02,-0.02]]]",
    ),
    (
        "overlaps",
        "Polygon",
        "[[[-0.01,-0.01],[0.01,-0.01],[0.01,0.01],[-0.01,0.01],[-0.01,-0.01]]]",
    ),
]


@pytest.fixture
async def both(pg_url: str) -> AsyncIterator[tuple[MemoryStore, PostgresStore]]:
    memory, pg = MemoryStore(), PostgresStore(pg_url)
    await pg.open()
    writes = [Write("put", d["id"], d) for d in _population(random.Random(5))]
    await memory.apply("", writes)
    await pg.apply("", writes)
    yield memory, pg
    await pg.close()


async def _same(stores: tuple[MemoryStore, PostgresStore], query: EntityQuery) -> None:
    expected = await stores[0].query("", query)
    got = await stores[1].query("", query)
    assert [e["id"] for e in got.entities] == [e["id"] for e in expected.entities]
    assert got.total == expected.total
    assert got.entities == expected.entities


@pytest.mark.parametrize("q", Q)
async def test_q_selects_what_the_reference_selects(
    both: tuple[MemoryStore, PostgresStore], q: str
) -> None:
    await _same(both, EntityQuery(q=parse_q(q, expand), limit=1000, count=True))
    await _same(both, EntityQuery(q=parse_q(q, expand), limit=3, offset=2, count=True))


@pytest.mark.parametrize(("georel", "geometry", "coordinates"), GEO)
async def test_geo_selects_what_the_reference_selects(
    both: tuple[MemoryStore, PostgresStore], georel: str, geometry: str, coordinates: str
) -> None:
    geo = parse_geoq(georel, geometry, coordinates, None, expand)
    await _same(both, EntityQuery(geo=geo, limit=1000, count=True))
    await _same(both, EntityQuery(geo=geo, types=parse_type_expr("S", expand), limit=5, count=True))


@pytest.mark.parametrize(
    "query",
    [
        EntityQuery(limit=7, offset=5, count=True),
        EntityQuery(types=parse_type_expr("S|T", expand), limit=1000, count=True),
        EntityQuery(types=parse_type_expr("S;T", expand), count=True),
        EntityQuery(types=parse_type_expr("(S|T);S", expand), limit=4, offset=50, count=True),
        EntityQuery(attrs=frozenset({X + "codes", X + "label"}), limit=1000, count=True),
        EntityQuery(ids=("urn:ngsi-ld:S:003", "urn:ngsi-ld:S:001", "urn:x"), count=True),
        EntityQuery(id_pattern="S:0[0-4]7$", count=True),
        EntityQuery(
            selectors=(
                EntitySelector(types=parse_type_expr("S", expand), id_pattern="1$"),
                EntitySelector(ids=("urn:ngsi-ld:S:002",)),
            ),
            limit=1000,
            count=True,
        ),
        EntityQuery(selectors=(EntitySelector(types=parse_type_expr("T", expand)),), count=True),
        EntityQuery(scope_q=parse_scope_q("/City/D1,/City/+"), limit=1000, count=True),
        EntityQuery(scope_q=parse_scope_q("/City/D2"), q=parse_q("level>2", expand), count=True),
    ],
)
async def test_selection_matches_the_reference(
    both: tuple[MemoryStore, PostgresStore], query: EntityQuery
) -> None:
    await _same(both, query)


async def test_discovery_matches_the_reference(both: tuple[MemoryStore, PostgresStore]) -> None:
    memory, pg = both
    assert sorted(await pg.types(""), key=str) == sorted(await memory.types(""), key=str)
    assert sorted(await pg.attributes(""), key=str) == sorted(await memory.attributes(""), key=str)


async def test_deletes_and_recreates_keep_insertion_order(
    both: tuple[MemoryStore, PostgresStore],
) -> None:
    writes = [
        Write("delete", "urn:ngsi-ld:S:004"),
        Write("put", "urn:ngsi-ld:S:004", thing("urn:ngsi-ld:S:004")),
    ]
    for s in both:
        await s.apply("", writes)
        await s.apply("", [Write("delete", "urn:ngsi-ld:S:010")])
    await _same(both, EntityQuery(limit=1000, count=True))
    await _same(both, EntityQuery(geo=parse_geoq(*GEO[0], None, expand), limit=1000, count=True))


async def test_an_id_put_twice_in_one_batch_keeps_only_its_last_shape(
    both: tuple[MemoryStore, PostgresStore],
) -> None:
    def at(lon: float) -> JSONObject:
        doc = thing("urn:twice")
        doc["attrs"][LOCATION] = [
            {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, 0.0]}}
        ]
        return doc

    for s in both:
        await s.apply("", [Write("put", "urn:twice", at(0.0)), Write("put", "urn:twice", at(50.0))])
    far = parse_geoq("near;maxDistance==1000", "Point", "[50,0]", None, expand)
    near = parse_geoq("near;maxDistance==1000", "Point", "[0,0]", None, expand)
    await _same(both, EntityQuery(geo=far, count=True))
    await _same(both, EntityQuery(geo=near, limit=1000, count=True))
    _, pg = both
    async with pg.db.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM tenant_default.geo_values g "
            "JOIN tenant_default.entities e USING (pk) WHERE e.id = 'urn:twice'"
        )
        assert await cur.fetchone() == (1,)
