"""The SQLite write path: what a write records beside the entity document, and that the
shortcuts it takes (no change without a subscription, index rows rewritten only where the
entity changed) leave the same state as writing everything."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from urbanos.core import entity
from urbanos.core import operations as ops
from urbanos.core.entity import Mode, expand_attributes
from urbanos.core.jsonld import core_term_map
from urbanos.core.model import NULL_URN
from urbanos.errors import InvalidRequest, NgsiLdError
from urbanos.http.negotiation import parse_json
from urbanos.services.entities import EntityService
from urbanos.storage import open_stores
from urbanos.storage.base import Write
from urbanos.storage.sqlite import SqliteStore, entities
from urbanos.storage.sqlite.database import Database
from urbanos.storage.sqlite.names import Names
from urbanos.types import JSONObject

DOC = {"id": "urn:e:1", "type": ["T"], "attrs": {}}


async def test_no_change_is_recorded_for_a_tenant_without_subscriptions(tmp_path: Path) -> None:
    stores = open_stores(f"sqlite:///{tmp_path}/w.db")
    await stores.open()
    store, subscriptions, outbox = stores.entities, stores.subscriptions, stores.outbox
    try:
        await store.apply("a", [Write("put", "urn:e:1", DOC)])
        assert await outbox.counts() == (0, 0)
        await subscriptions.insert("b", {"id": "urn:s:1", "type": "Subscription"})
        await store.apply("a", [Write("put", "urn:e:2", {**DOC, "id": "urn:e:2"})])
        await store.apply("b", [Write("put", "urn:e:1", DOC)])
        [change] = await outbox.changes(10)
        assert (change.tenant, change.entity_id) == ("b", "urn:e:1")
    finally:
        await stores.close()


def _index_rows(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every index row, with the entity's id in place of its pk (pks differ between files)."""
    ids = dict(conn.execute("SELECT pk, id FROM entities").fetchall())
    name = "(SELECT name FROM names WHERE id = {})".format  # ids differ between files too
    queries = {
        "types": f"SELECT tenant, {name('type')}, pk FROM entity_types",
        "attrs": f"SELECT tenant, {name('attr')}, {name('kind')}, pk FROM entity_attrs",
        "values": f"SELECT tenant, {name('attr')}, {name('type')}, num, str, pk FROM attr_values",
        "geo": f"""SELECT k.tenant, {name('k.attr')}, g.minx, g.maxx, g.miny, g.maxy, k.pk
                  FROM geo_keys k JOIN geo_index g ON g.gid = k.gid""",
    }
    return {
        name: sorted(((*row[:-1], ids[row[-1]]) for row in conn.execute(sql)), key=repr)
        for name, sql in queries.items()
    }


def _instance(rnd: random.Random, name: str) -> JSONObject:
    if name == "location":
        x = rnd.choice([1.5, 2.25, 3.0])
        return {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [x, 4.0]}}
    if name == "rel":
        return {"type": "Relationship", "object": f"urn:x:{rnd.randint(0, 2)}"}
    return {"type": "Property", "value": rnd.choice([1, 2.5, "a", "b", [1, "c"], {"k": 3}])}


def _random_entity(rnd: random.Random, eid: str) -> JSONObject:
    names = rnd.sample(["p", "q", "location", "rel"], rnd.randint(0, 4))
    attrs = {name: [{**_instance(rnd, name), "modifiedAt": rnd.choice("ab")}] for name in names}
    if "q" in attrs and rnd.random() < 0.5:
        attrs["q"].append({**_instance(rnd, "q"), "datasetId": "urn:ds:1"})
    return {"id": eid, "type": rnd.sample(["A", "B"], rnd.randint(1, 2)), "attrs": attrs}


def test_index_rows_after_updates_are_those_of_a_fresh_write() -> None:
    """Rows rewritten only where an entity changed equal the rows of writing it anew."""
    rnd = random.Random(7)
    live = sqlite3.connect(":memory:", isolation_level=None)
    for stmt in entities.SCHEMA:
        live.execute(stmt)
    current: dict[str, JSONObject] = {}
    live_names = Names()
    for step in range(300):
        eid = f"urn:e:{rnd.randint(0, 9)}"
        if eid in current and rnd.random() < 0.15:
            entities.delete(live, "t", eid)
            del current[eid]
        else:
            current[eid] = _random_entity(rnd, eid)
            entities.put(live, live_names, "t", current[eid])
        if step % 25 == 0 or step == 299:
            fresh = sqlite3.connect(":memory:", isolation_level=None)
            for stmt in entities.SCHEMA:
                fresh.execute(stmt)
            fresh_names = Names()
            for doc in current.values():
                entities.put(fresh, fresh_names, "t", doc)
            assert _index_rows(live) == _index_rows(fresh), step


async def test_writes_waiting_together_commit_together_and_fail_alone(tmp_path: Path) -> None:
    """Pieces handed in at once share a transaction; a failing one rolls back alone, the
    others commit, and work handed in before close still runs."""
    db = Database(tmp_path / "g.db")
    await db.open(["CREATE TABLE t (v INTEGER UNIQUE)"])

    def insert(v: int) -> Callable[[sqlite3.Connection], int]:
        return lambda conn: conn.execute("INSERT INTO t (v) VALUES (?)", (v,)).rowcount

    results = await asyncio.gather(
        *(db.transact(insert(v)) for v in (1, 2, 1, 3)), return_exceptions=True
    )
    assert results[:2] == [1, 1] and results[3] == 1
    assert isinstance(results[2], sqlite3.IntegrityError)
    late = asyncio.ensure_future(db.transact(insert(4)))
    await asyncio.sleep(0)
    await db.close()
    assert await late == 1
    await db.open([])
    rows = await db.read(lambda conn: conn.execute("SELECT v FROM t ORDER BY v").fetchall())
    assert rows == [(1,), (2,), (3,), (4,)]
    await db.close()


_MEMBER_CHOICES: dict[str, list[Any]] = {
    "type": ["Property", "Relationship", "GeoProperty", "LanguageProperty", 3, ["Property"]],
    "value": [1, 2.5, True, "text", NULL_URN, None, [1], {"a": 1}, "urn:x:1"],
    "object": ["urn:x:1", "not a uri", NULL_URN, ["urn:x:1"], 7],
    "observedAt": ["2024-05-01T10:00:00Z", "2024-05-01T10:00:00+02:00", "yesterday", NULL_URN, 5],
    "unitCode": ["CEL", "", NULL_URN, 3],
    "datasetId": ["urn:ds:1", "@none", "not a uri", NULL_URN],
    "objectType": ["T"],
    "accuracy": [{"type": "Property", "value": 0.5}],
    "@id": ["urn:x:2"],
}


def _random_fragment(rnd: random.Random) -> dict[str, Any]:
    if rnd.random() < 0.5:  # mostly valid: one kind, its value, valid members
        kind, member = rnd.choice([("Property", "value"), ("Relationship", "object")])
        out: dict[str, Any] = {"type": kind, member: _MEMBER_CHOICES[member][0]}
        for key in rnd.sample(["observedAt", "unitCode", "datasetId", "accuracy"], rnd.randint(0, 3)):
            choices = _MEMBER_CHOICES[key]
            out[key] = rnd.choice(choices if rnd.random() < 0.3 else choices[:2])
        return dict(rnd.sample(sorted(out.items()), len(out)))  # any member order
    keys = rnd.sample(sorted(_MEMBER_CHOICES), rnd.randint(1, 5))
    if rnd.random() < 0.7:
        keys = ["type", rnd.choice(["value", "object"]), *keys]
    return {k: rnd.choice(_MEMBER_CHOICES[k]) for k in keys}


def _outcome(name: str, raw: object, mode: Mode) -> bytes:
    terms = core_term_map()
    try:
        attrs = expand_attributes({name: raw}, terms, "2024-01-01T00:00:00Z", mode=mode)
    except NgsiLdError as exc:
        return f"{type(exc).__name__}: {exc.detail}".encode()
    return orjson.dumps(attrs)  # members in order


def test_simple_instances_come_out_as_the_general_rules_make_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shortcut for plain Properties and Relationships gives the same stored form, the
    same member order and the same errors as the general rules, in every mode."""
    rnd = random.Random(3)
    cases = [
        (name, _random_fragment(rnd) if rnd.random() < 0.8 else [
            _random_fragment(rnd), _random_fragment(rnd)])
        for name in ["temperature", "location", "ngsildproof"] for _ in range(700)
    ]
    taken = 0
    simple = entity._simple_instance

    def counted(iri: str, raw: dict[str, Any]) -> JSONObject | None:
        nonlocal taken
        out = simple(iri, raw)
        taken += out is not None
        return out

    monkeypatch.setattr(entity, "_simple_instance", counted)
    fast = [_outcome(name, raw, mode) for name, raw in cases for mode in Mode]
    monkeypatch.setattr(entity, "_simple_instance", lambda iri, raw: None)
    general = [_outcome(name, raw, mode) for name, raw in cases for mode in Mode]
    assert fast == general
    assert taken > 1000 and sum(not o.startswith(b"BadRequestData") for o in general) > 500


@pytest.mark.parametrize("body", [
    b'{"a":1,"a":2}', b'{"a":"x:y","b":{"c":1,"c":":"}}', b'{"a" : ":", "a" : 1}',
    b'{"a":"\\"","a":1}', b'[{"a":1},{"b":2,"b":3}]', b'{"\\u0061":1,"a":2}',
])
def test_a_key_given_twice_is_refused_with_or_without_escapes(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="duplicate key"):
        parse_json(body, 32)


@pytest.mark.parametrize("body", [
    b'{"a":":","b":1}', b'{"a\\u003a":1, "b" : "::"}', b'"x:y"', b'[{"a":1},{"a":2}]',
    b'{"a":123456789012345678901234567890}',
])
def test_colons_inside_strings_are_no_keys(body: bytes) -> None:
    assert parse_json(body, 32) == orjson.loads(body)


def _stored() -> JSONObject:
    inst = {"type": "Property", "value": {"a": {"b": 1}}, "createdAt": "c", "modifiedAt": "m",
            "urn:sub": {"type": "Property", "value": [1, {"x": 2}]}}
    return {"id": "urn:e:1", "type": ["T"], "scope": ["/a"], "createdAt": "c", "modifiedAt": "m",
            "attrs": {"p": [inst, {**inst, "datasetId": "urn:ds:1"}],
                      "q": [{"type": "Relationship", "object": "urn:x:1"}]}}


def _fragment() -> dict[str, list[JSONObject]]:
    return {"p": [{"type": "Property", "value": {"a": {"c": 2}, "z": NULL_URN},
                   "urn:sub": {"type": "Property", "value": 3}}],
            "q": [{"type": "Property", "value": NULL_URN}],
            "r": [{"type": "Property", "value": 1}]}


@pytest.mark.parametrize("op", [
    lambda e: ops.append_attrs(e, _fragment(), "n", no_overwrite=False, types=["U"],
                               scope=["/b"]),
    lambda e: ops.append_attrs(e, _fragment(), "n", no_overwrite=True, scope=["/b"]),
    lambda e: ops.update_attrs(e, _fragment(), "n", types=["U"], scope=["/b"]),
    lambda e: ops.merge_entity(e, {"attrs": _fragment(), "type": ["U"], "scope": None}, "n"),
    lambda e: ops.replace_entity(e, _stored(), "n"),
    lambda e: ops.patch_attr(e, "p", _fragment()["p"], "n"),
    lambda e: ops.patch_attr(e, "q", [{"type": "Relationship", "object": NULL_URN}], "n"),
    lambda e: ops.replace_attr(e, "p", _fragment()["p"], "n"),
    lambda e: ops.delete_attr(e, "p", "n", dataset_id="urn:ds:1"),
    lambda e: ops.delete_attr(e, "p", "n", delete_all=True),
    lambda e: ops.delete_attr(e, "scope", "n"),
    lambda e: ops.trim_attrs(e, "n", keep=frozenset({"q"})),
])
def test_operations_leave_the_entity_they_start_from_as_it_was(op: Any) -> None:
    """Results share unchanged parts with their input (no deep copy), so an operation must
    never change the input: it is the write's ``before``."""
    entity = _stored()
    out = op(entity)
    assert entity == _stored()
    assert out is not None and (out if isinstance(out, dict) else out.entity) != entity


async def test_batch_upsert_reports_each_id_once_in_first_order(tmp_path: Path) -> None:
    """An id given twice in one batch is created by the first entry, updated by the second,
    and reported once, where it first came."""
    store = SqliteStore(tmp_path / "b.db")
    await store.open()
    service = EntityService(store, clock=lambda: "2024-01-01T00:00:00Z")
    p = {"type": "Property", "value": 1}
    try:
        await service.batch_upsert("", [{**DOC, "id": "urn:e:0", "attrs": {"p": [p]}}],
                                   replace=True)
        batch = [{**DOC, "id": eid, "attrs": {name: [p]}}
                 for eid, name in [("urn:e:2", "p"), ("urn:e:0", "q"), ("urn:e:2", "q")]]
        result = await service.batch_upsert("", batch, replace=False)
        assert result.success == ["urn:e:2", "urn:e:0"] and result.created == ["urn:e:2"]
        stored = await store.get_many("", ["urn:e:0", "urn:e:2"])
        assert {k: sorted(v["attrs"]) for k, v in stored.items()} == {
            "urn:e:0": ["p", "q"], "urn:e:2": ["p", "q"]}
    finally:
        await store.close()


async def test_a_name_interned_by_a_write_that_rolls_back_is_not_reused(tmp_path: Path) -> None:
    """A write that interns a new attribute name and then fails takes the name's row with
    it; the next write of that name interns it again instead of using the vanished id."""
    store = SqliteStore(tmp_path / "n.db")
    await store.open()
    attr = "https://ex.org/brandNew"
    doc = {"id": "urn:e:1", "type": ["https://ex.org/T"],
           "attrs": {attr: [{"type": "Property", "value": 7}]}}

    def fails(found: dict[str, JSONObject]) -> tuple[list[Write], None]:
        return [Write("put", "urn:e:1", doc), Write("put", "urn:e:1", {"id": "urn:e:1"})], None

    try:
        with pytest.raises(KeyError):  # the second document has no "attrs"
            await store.modify("t", ["urn:e:1"], fails)
        await store.apply("t", [Write("put", "urn:e:1", doc)])
        [info] = [i for i in await store.attributes("t") if i.attr == attr]
        assert info.count == 1 and info.kinds == {"Property"}
        conn = sqlite3.connect(tmp_path / "n.db")
        orphans = conn.execute(
            "SELECT count(*) FROM attr_values WHERE attr NOT IN (SELECT id FROM names)"
        ).fetchone()
        conn.close()
        assert orphans == (0,)
    finally:
        await store.close()


async def test_committed_writes_reach_the_database_file_without_the_writer_checkpointing(
    tmp_path: Path,
) -> None:
    """The checkpoint thread copies committed pages from the WAL into the file a moment
    after the commit (the writer's own checkpoint only starts at 80 MB of WAL)."""
    path = tmp_path / "c.db"
    db = Database(path)
    await db.open(["CREATE TABLE t (v TEXT)"])
    try:
        await db.transact(lambda conn: conn.executemany(
            "INSERT INTO t (v) VALUES (?)", [("x" * 100,) for _ in range(500)]))

        def in_file() -> int:  # the file alone, WAL ignored
            conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
            try:
                return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
            except sqlite3.OperationalError:  # the table itself is not in the file yet
                return 0
            finally:
                conn.close()

        for _ in range(100):
            if in_file() == 500:
                break
            await asyncio.sleep(0.02)
        assert in_file() == 500
    finally:
        await db.close()
