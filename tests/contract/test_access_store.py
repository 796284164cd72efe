"""What every access store does the same way (memory, a SQLite file, PostgreSQL), each
reached as ``Stores.access`` through ``open_stores``: grants, API keys, issuers, the audit
log and its filters, and the audit hook that commits a write's record with the write."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
import psycopg
import pytest

from tests.contract.conftest import Backend
from urbanos.core.policy import Action, Assignee, Grant, Role, Target
from urbanos.storage import Stores
from urbanos.storage.access import (
    AccessStore,
    ApiKey,
    AuditFilter,
    AuditNote,
    AuditNotes,
    AuditRecord,
    Issuer,
)
from urbanos.storage.base import Write
from urbanos.storage.postgres.access import ACCESS_CHANNEL
from urbanos.types import JSONObject

X = "https://ex.org/"


@pytest.fixture
async def stores(backend: Backend) -> Stores:
    return await backend.open()


@pytest.fixture
def access(stores: Stores) -> AccessStore:
    return stores.access


def grant(gid: str, tenant: str = "", **target: Any) -> Grant:
    return Grant(gid, tenant, Assignee.parse("claim:groups=ops"),
                 frozenset({Action.READ, Action.WRITE}), Target(**target), assigner="admin")


def key(kid: str, tenant: str = "", role: Role = Role.READER, **extra: Any) -> ApiKey:
    return ApiKey(kid, tenant, role, f"key {kid}", "ab" * 32, "2024-05-01T00:00:00.000Z",
                  **extra)


def at(second: int) -> str:
    return f"2024-05-01T00:{second // 60:02d}:{second % 60:02d}.000Z"


def record(second: int, **fields: Any) -> AuditRecord:
    base: dict[str, Any] = {
        "time": at(second), "principal": "apikey:k1", "client": None, "tenant": "",
        "operation": "entity.create", "entity_ids": (), "outcome": "ok", "status": 201,
    }
    return AuditRecord(**{**base, **fields})


def thing(eid: str, n: int = 0) -> JSONObject:
    stamp = "2024-05-01T00:00:00.000Z"
    return {"id": eid, "type": [X + "Thing"],
            "attrs": {X + "n": [{"type": "Property", "value": n}]},
            "createdAt": stamp, "modifiedAt": stamp}


def unstamped(records: list[AuditRecord]) -> list[AuditRecord]:
    """Records without what the store assigns (seq) or the hook's clock sets (time)."""
    return [replace(r, seq=None, time="") for r in records]


# --------------------------------------------------------------------------- grants


async def test_grants_round_trip_in_insertion_order(access: AccessStore) -> None:
    full = grant("g2", ids=("urn:a", "urn:b"), id_pattern="urn:a.*", types=(X + "T",),
                 scopes=("/city",), attributes=(X + "n",), hidden=(X + "secret",))
    plain = Grant("g3", "", Assignee.parse("public"), frozenset({Action.READ}))
    await access.put_grant(grant("g1"))
    await access.put_grant(full)
    await access.put_grant(plain)
    assert await access.grants("") == [grant("g1"), full, plain]
    assert await access.grants("other") == []


async def test_put_grant_replaces_by_tenant_and_id_keeping_its_place(
    access: AccessStore,
) -> None:
    await access.put_grant(grant("g1"))
    await access.put_grant(grant("g2"))
    changed = replace(grant("g1"), actions=frozenset({Action.ADMIN}))
    await access.put_grant(changed)
    assert await access.grants("") == [changed, grant("g2")]


async def test_delete_grant_says_whether_there_was_one(access: AccessStore) -> None:
    await access.put_grant(grant("g1"))
    await access.put_grant(grant("g1", "b"))
    assert await access.delete_grant("", "g1") is True
    assert await access.delete_grant("", "g1") is False
    assert await access.delete_grant("", "never") is False
    assert await access.grants("") == []
    assert await access.grants("b") == [grant("g1", "b")]


async def test_grants_of_one_tenant_are_never_another_tenants(access: AccessStore) -> None:
    await access.put_grant(grant("same", "a", ids=("urn:a",)))
    await access.put_grant(grant("same", "b", ids=("urn:b",)))
    await access.put_grant(grant("only-a", "a"))
    assert await access.grants("a") == [grant("same", "a", ids=("urn:a",)), grant("only-a", "a")]
    assert await access.grants("b") == [grant("same", "b", ids=("urn:b",))]
    await access.delete_grant("b", "only-a")  # not b's: a keeps it
    assert len(await access.grants("a")) == 2


# --------------------------------------------------------------------------- API keys


async def test_keys_put_get_and_list_by_tenant(access: AccessStore) -> None:
    k1 = key("k1", "a", Role.WRITER, expires_at="2025-01-01T00:00:00.000Z", created_by="root")
    k2 = key("k2", "b", Role.TENANT_ADMIN)
    k3 = key("k3", "a")
    for k in (k1, k2, k3):
        await access.put_key(k)
    assert await access.get_key("k1") == k1
    assert await access.get_key("nope") is None
    assert await access.list_keys() == [k1, k2, k3]
    assert await access.list_keys("a") == [k1, k3]
    assert await access.list_keys("b") == [k2]
    assert await access.list_keys("c") == []


async def test_put_key_replaces_the_key_with_that_id(access: AccessStore) -> None:
    await access.put_key(key("k1"))
    await access.put_key(key("k2"))
    renamed = replace(key("k1"), name="renamed", role=Role.WRITER)
    await access.put_key(renamed)
    assert await access.list_keys() == [renamed, key("k2")]


async def test_revoking_keeps_the_key_and_happens_once(access: AccessStore) -> None:
    await access.put_key(key("k1"))
    assert await access.revoke_key("k1", at(5)) is True
    assert await access.revoke_key("k1", at(9)) is False
    assert await access.revoke_key("unknown", at(9)) is False
    assert await access.get_key("k1") == replace(key("k1"), revoked_at=at(5))
    assert await access.list_keys() == [replace(key("k1"), revoked_at=at(5))]


async def test_touch_keys_records_last_use(access: AccessStore) -> None:
    await access.put_key(key("k1"))
    await access.put_key(key("k2"))
    await access.revoke_key("k2", at(1))
    await access.touch_keys({"k1": at(3), "k2": at(4), "unknown": at(5)})
    await access.touch_keys({})
    assert await access.get_key("k1") == replace(key("k1"), last_used_at=at(3))
    assert await access.get_key("k2") == replace(key("k2"), revoked_at=at(1), last_used_at=at(4))
    assert await access.get_key("unknown") is None
    await access.touch_keys({"k1": at(7)})
    found = await access.get_key("k1")
    assert found is not None and found.last_used_at == at(7)


# --------------------------------------------------------------------------- issuers


async def test_issuers_upsert_by_tenant_and_url(access: AccessStore) -> None:
    claims: JSONObject = {"roles": "realm_access.roles", "tenantRoles": {"city": ["a", "b"]}}
    first = Issuer("*", "https://id.example/realms/platform", "urbanos", claims)
    second = Issuer("a", "https://id.example/realms/a")
    same_url = Issuer("b", "https://id.example/realms/a", "b-aud")
    for i in (first, second, same_url):
        await access.put_issuer(i)
    assert await access.issuers() == [first, second, same_url]
    changed = Issuer("a", "https://id.example/realms/a", "new", {"groups": "groups"})
    await access.put_issuer(changed)
    assert await access.issuers() == [first, changed, same_url]


async def test_delete_issuer_says_whether_there_was_one(access: AccessStore) -> None:
    await access.put_issuer(Issuer("a", "https://id.example/a"))
    await access.put_issuer(Issuer("b", "https://id.example/a"))
    assert await access.delete_issuer("a", "https://id.example/a") is True
    assert await access.delete_issuer("a", "https://id.example/a") is False
    assert await access.delete_issuer("c", "https://id.example/a") is False
    assert await access.issuers() == [Issuer("b", "https://id.example/a")]


# --------------------------------------------------------------------------- audit log


async def test_append_assigns_increasing_seq_and_audit_is_newest_first(
    access: AccessStore,
) -> None:
    given = [record(1, entity_ids=("urn:a",), request_id="r1", client="app", detail="x"),
             record(2, outcome="denied", status=403),
             record(3, entity_ids=("urn:b", "urn:c"))]
    await access.append(given[:2])
    await access.append(given[2:])
    await access.append([])
    found = await access.audit(AuditFilter())
    assert [replace(r, seq=None) for r in found] == given[::-1]
    seqs = [r.seq for r in found]
    assert all(isinstance(s, int) for s in seqs)
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 3


@pytest.fixture
async def log(access: AccessStore) -> list[AuditRecord]:
    """Eight records, varied in each filtered field; seconds 0..7 in append order."""
    records = [
        record(0, tenant="a", operation="entity.create", entity_ids=("urn:1",)),
        record(1, tenant="a", operation="entity.update", entity_ids=("urn:1", "urn:2")),
        record(2, tenant="b", operation="entity.delete", entity_ids=("urn:1",)),
        record(3, tenant="a", operation="entityx.create", principal="iss#alice"),
        record(4, tenant="a", operation="grant.add", principal="iss#alice"),
        record(5, tenant="a", operation="entity.create", outcome="denied", status=403,
               entity_ids=("urn:3",)),
        record(6, tenant="b", operation="batch.upsert", entity_ids=("urn:2", "urn:3")),
        record(7, tenant="a", operation="key.revoke", outcome="failed", status=500),
    ]
    await access.append(records)
    return records


def seconds(found: list[AuditRecord]) -> list[int]:
    return [int(r.time[17:19]) for r in found]


@pytest.mark.parametrize(("where", "expected"), [
    (AuditFilter(), [7, 6, 5, 4, 3, 2, 1, 0]),
    (AuditFilter(tenant="b"), [6, 2]),
    (AuditFilter(tenant="none"), []),
    (AuditFilter(principal="iss#alice"), [4, 3]),
    (AuditFilter(operation="entity.create"), [5, 0]),
    (AuditFilter(operation="entity."), [5, 2, 1, 0]),  # a prefix: not entityx.*
    (AuditFilter(operation="entity"), []),  # no dot: the exact name only
    (AuditFilter(outcome="denied"), [5]),
    (AuditFilter(entity_id="urn:1"), [2, 1, 0]),
    (AuditFilter(entity_id="urn:3"), [6, 5]),
    (AuditFilter(entity_id="urn:"), []),
    (AuditFilter(since=at(3)), [7, 6, 5, 4, 3]),  # inclusive
    (AuditFilter(until=at(3)), [2, 1, 0]),  # exclusive
    (AuditFilter(since=at(2), until=at(5)), [4, 3, 2]),
    (AuditFilter(tenant="a", operation="entity.", outcome="ok"), [1, 0]),
    (AuditFilter(tenant="a", entity_id="urn:1", since=at(1)), [1]),
])
async def test_audit_filters(access: AccessStore, log: list[AuditRecord], where: AuditFilter,
                             expected: list[int]) -> None:
    assert seconds(await access.audit(where)) == expected


async def test_audit_pages_with_limit_and_offset(access: AccessStore,
                                                 log: list[AuditRecord]) -> None:
    assert seconds(await access.audit(AuditFilter(limit=3))) == [7, 6, 5]
    assert seconds(await access.audit(AuditFilter(limit=3, offset=3))) == [4, 3, 2]
    assert seconds(await access.audit(AuditFilter(limit=3, offset=6))) == [1, 0]
    assert seconds(await access.audit(AuditFilter(limit=3, offset=8))) == []
    assert seconds(await access.audit(AuditFilter(tenant="a", limit=2, offset=1))) == [5, 4]


async def test_purge_deletes_what_is_older_and_counts_it(access: AccessStore,
                                                         log: list[AuditRecord]) -> None:
    assert await access.purge_audit(at(3)) == 3
    assert await access.purge_audit(at(3)) == 0
    assert seconds(await access.audit(AuditFilter())) == [7, 6, 5, 4, 3]
    assert seconds(await access.audit(AuditFilter(entity_id="urn:1"))) == []
    assert seconds(await access.audit(AuditFilter(entity_id="urn:3"))) == [6, 5]
    await access.append([record(8, entity_ids=("urn:1",))])
    assert seconds(await access.audit(AuditFilter(entity_id="urn:1"))) == [8]
    assert await access.purge_audit(at(60)) == 6
    assert await access.audit(AuditFilter()) == []


def test_the_log_is_append_only() -> None:
    """Nothing in the interface changes a record once written (purges aside)."""
    audit_methods = {n for n in dir(AccessStore) if "audit" in n or n == "append"}
    assert audit_methods == {"append", "audit", "purge_audit"}


# --------------------------------------------------------------------------- write hook


def hooks_of(stores: Stores) -> list[Any]:
    """The entity store's write hooks (every backend has them; the interface does not)."""
    entities: Any = stores.entities
    hooks: list[Any] = entities.write_hooks
    return hooks


async def test_the_audit_hook_comes_after_history_and_the_outbox(stores: Stores) -> None:
    hooks = hooks_of(stores)
    owners = [getattr(h, "__self__", None) for h in hooks]
    assert owners[-1] is stores.access
    assert owners.index(stores.temporal) < owners.index(stores.outbox) < len(owners) - 1


async def test_writes_with_a_note_get_one_record_per_note(stores: Stores) -> None:
    notes = stores.access.notes
    alice = AuditNote("iss#alice", "app", "batch.upsert", "req-1")
    bob = AuditNote("iss#bob", None, "entity.update", "req-2", status=204, detail="merge")
    writes = [Write("put", f"urn:{n}", thing(f"urn:{n}")) for n in range(5)]
    notes.attach(writes[0], alice)
    notes.attach(writes[1], bob)
    notes.attach(writes[3], alice)
    # writes[2] and [4] carry no note: they record nothing
    await stores.entities.apply("city", writes)
    found = await stores.access.audit(AuditFilter())
    assert unstamped(found) == unstamped([
        AuditRecord("", "iss#bob", None, "city", "entity.update", ("urn:1",), "ok", 204,
                    "req-2", "merge"),
        AuditRecord("", "iss#alice", "app", "city", "batch.upsert", ("urn:0", "urn:3"), "ok",
                    0, "req-1"),
    ])
    assert all(r.time.endswith("Z") and len(r.time) == 24 for r in found)
    for w in writes:
        assert notes.take(w) is None  # taken by the hook, none left behind


async def test_a_write_without_notes_records_nothing(stores: Stores) -> None:
    await stores.entities.apply("", [Write("put", "urn:a", thing("urn:a"))])
    assert await stores.entities.get("", "urn:a") is not None
    assert await stores.access.audit(AuditFilter()) == []


async def test_modify_records_the_writes_its_plan_noted(stores: Stores) -> None:
    await stores.entities.apply("", [Write("put", "urn:a", thing("urn:a", 1))])
    note = AuditNote("apikey:k1", None, "entity.delete")

    def plan(current: dict[str, JSONObject]) -> tuple[list[Write], int]:
        writes = [Write("delete", "urn:a", before=current["urn:a"])]
        stores.access.notes.attach(writes[0], note)
        return writes, len(current)

    assert await stores.entities.modify("", ["urn:a"], plan) == 1
    assert await stores.entities.get("", "urn:a") is None
    (found,) = await stores.access.audit(AuditFilter(entity_id="urn:a"))
    assert (found.principal, found.operation, found.tenant, found.outcome) == (
        "apikey:k1", "entity.delete", "", "ok")


def test_a_note_left_behind_never_passes_to_a_new_write() -> None:
    """Notes go by object identity; a Write whose note was never taken (its plan ran again,
    or failed before the hook) must not hand it to a later Write given the same id."""
    notes = AuditNotes()
    note = AuditNote("iss#alice", None, "entity.create")
    for n in range(100):
        notes.attach(Write("put", f"urn:old:{n}"), note)  # dropped right away
    fresh = [Write("put", f"urn:new:{n}") for n in range(100)]
    assert [notes.take(w) for w in fresh] == [None] * 100
    assert len(notes) == 100


def test_notes_are_taken_once_and_discarded_on_failure() -> None:
    notes = AuditNotes()
    a, b = Write("put", "urn:a"), Write("put", "urn:b")
    note = AuditNote("p", None, "entity.create")
    notes.attach(a, note)
    notes.attach(b, note)
    assert notes.take(a) == note
    assert notes.take(a) is None
    assert notes.take(Write("put", "urn:b")) is None  # an equal Write is another write
    notes.discard([a, b])
    assert notes.take(b) is None and len(notes) == 0


def failing_hook(kind: str, bad: Callable[[list[Write]], bool]) -> Any:
    """A write hook (of the backend's shape) that fails the transaction when ``bad``."""
    def check(writes: list[Write]) -> None:
        if bad(writes):
            raise RuntimeError("the transaction fails after the audit hook ran")

    if kind == "postgres":
        async def pg_hook(conn: object, tenant: str, writes: list[Write]) -> None:
            check(writes)
        return pg_hook
    return lambda conn, tenant, writes: check(writes)


async def test_a_failed_transaction_leaves_neither_the_write_nor_its_record(
    durable: Backend,
) -> None:
    stores = await durable.open()
    hooks_of(stores).append(failing_hook(durable.kind, lambda w: True))
    write = Write("put", "urn:a", thing("urn:a"))
    stores.access.notes.attach(write, AuditNote("iss#alice", None, "entity.create"))
    with pytest.raises(RuntimeError):
        await stores.entities.apply("", [write])
    assert await stores.entities.get("", "urn:a") is None
    assert await stores.access.audit(AuditFilter()) == []


async def test_every_committed_write_has_its_record_and_no_failed_one_has(
    durable: Backend,
) -> None:
    """Concurrent writes, some failing inside their transaction (SQLite runs them in one
    group commit, each in its own savepoint): the log names exactly the entities stored."""
    stores = await durable.open()
    hooks_of(stores).append(
        failing_hook(durable.kind, lambda ws: any(w.entity_id.startswith("urn:bad") for w in ws)))

    async def one(eid: str) -> bool:
        write = Write("put", eid, thing(eid))
        stores.access.notes.attach(write, AuditNote("iss#alice", None, "entity.create", eid))
        try:
            await stores.entities.apply("", [write])
        except RuntimeError:
            stores.access.notes.discard([write])
            return False
        return True

    ids = [f"urn:{'bad' if n % 3 == 0 else 'good'}:{n}" for n in range(30)]
    outcomes = await asyncio.gather(*(one(eid) for eid in ids))
    stored = {eid for eid, ok in zip(ids, outcomes, strict=True) if ok}
    assert stored == {eid for eid in ids if "good" in eid}
    present = await stores.entities.get_many("", ids)
    assert set(present) == stored
    found = await stores.access.audit(AuditFilter(limit=100))
    assert sorted(eid for r in found for eid in r.entity_ids) == sorted(stored)
    assert all(r.request_id == r.entity_ids[0] for r in found)


async def test_each_write_call_gets_its_own_record(backend: Backend) -> None:
    stores = await backend.open()
    for n in range(3):
        write = Write("put", f"urn:{n}", thing(f"urn:{n}"))
        stores.access.notes.attach(write, AuditNote("p", None, "entity.create", f"r{n}"))
        await stores.entities.apply("t", [write])
    found = await stores.access.audit(AuditFilter(tenant="t"))
    assert [r.request_id for r in found] == ["r2", "r1", "r0"]
    assert [r.entity_ids for r in found] == [("urn:2",), ("urn:1",), ("urn:0",)]


# --------------------------------------------------------------------------- durability


async def test_everything_survives_a_reopen(durable: Backend) -> None:
    first = await durable.open()
    g = grant("g1", "a", types=(X + "T",))
    k = key("k1", "a", Role.WRITER)
    i = Issuer("a", "https://id.example/a", "aud", {"roles": "roles"})
    await first.access.put_grant(g)
    await first.access.put_key(k)
    await first.access.revoke_key("k1", at(2))
    await first.access.put_issuer(i)
    await first.access.append([record(1, tenant="a", entity_ids=("urn:x",))])
    write = Write("put", "urn:a", thing("urn:a"))
    first.access.notes.attach(write, AuditNote("p", None, "entity.create"))
    await first.entities.apply("a", [write])
    before = await first.access.audit(AuditFilter())
    await durable.close(first)

    again = await durable.open()
    assert await again.access.grants("a") == [g]
    assert await again.access.get_key("k1") == replace(k, revoked_at=at(2))
    assert await again.access.issuers() == [i]
    assert await again.access.audit(AuditFilter()) == before
    assert [r.entity_ids for r in before] == [("urn:a",), ("urn:x",)]
    await again.access.append([record(3)])
    newest = await again.access.audit(AuditFilter(limit=1))
    assert newest[0].seq is not None and before[0].seq is not None
    assert newest[0].seq > before[0].seq  # numbering goes on after a restart


# --------------------------------------------------------------------------- cluster


async def test_changes_of_access_are_announced_to_the_cluster_by_tenant(pg: Backend) -> None:
    """Other nodes cache grants, keys and issuers: each change that changed something is
    announced once committed, naming its tenant; key use and the audit log are not."""
    stores = await pg.open()
    access = stores.access
    async with await psycopg.AsyncConnection.connect(pg.url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {ACCESS_CHANNEL}")
        await access.put_grant(grant("g1", "a"))
        await access.delete_grant("a", "g1")
        await access.delete_grant("a", "g1")  # nothing deleted: nothing to announce
        await access.put_key(key("k1", "b"))
        await access.touch_keys({"k1": at(1)})
        await access.revoke_key("k1", at(2))
        await access.revoke_key("k1", at(3))  # already revoked
        await access.put_issuer(Issuer("c", "https://id.example/c"))
        await access.delete_issuer("c", "https://id.example/c")
        await access.append([record(1)])
        await access.purge_audit(at(60))
        await listener.execute(f"NOTIFY {ACCESS_CHANNEL}, 'end'")
        tenants: list[str] = []
        async for n in listener.notifies(timeout=10):
            if n.payload == "end":
                break
            tenants.append(orjson.loads(n.payload)["tenant"])
    assert tenants == ["a", "a", "b", "b", "c", "c"]
