"""AccessService on the memory access store: the grants cache and its generation rule,
decisions and their 401/403, grants given by admins and by owners, API keys (format,
hash, expiry, revocation, last use), the audit log (records committed with writes,
denials, retention)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from urbanos.core.policy import (
    ANONYMOUS,
    ANY_TENANT,
    OPEN,
    UNRESTRICTED,
    Action,
    Assignee,
    Grant,
    Principal,
    Role,
    Target,
)
from urbanos.errors import AlreadyExists, BadRequestData, Forbidden, ResourceNotFound, Unauthorized
from urbanos.services.access import AccessService, AuditFilter, AuditRecord
from urbanos.services.stores import Stores, open_stores
from urbanos.storage.base import Write
from urbanos.types import JSONObject

CITY = "city"
LAMP = "https://uri.etsi.org/ngsi-ld/default-context/Lamp"


def member(subject: str, *roles: Role, tenant: str = CITY) -> Principal:
    return Principal(kind="apikey", subject=subject, roles={tenant: frozenset(roles)})


ADMIN = member("admin", Role.TENANT_ADMIN)
READER = member("reader", Role.READER)
ROOT = Principal(kind="oidc", subject="root", issuer="https://idp.example",
                 roles={ANY_TENANT: frozenset({Role.PLATFORM_ADMIN})})
ALICE = Principal(kind="oidc", subject="alice", issuer="https://idp.example")
BOB = Principal(kind="oidc", subject="bob", issuer="https://idp.example")


class Clock:
    """Canonical times, moved by hand."""

    def __init__(self) -> None:
        self.day = 10

    def __call__(self) -> str:
        return f"2030-01-{self.day:02d}T00:00:00.000Z"


class Monotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


ENTITIES: dict[tuple[str, str], JSONObject] = {
    (CITY, "urn:ngsi-ld:Lamp:1"): {"id": "urn:ngsi-ld:Lamp:1", "type": [LAMP], "attrs": {},
                                   "owner": ALICE.key},
    (CITY, "urn:ngsi-ld:Lamp:2"): {"id": "urn:ngsi-ld:Lamp:2", "type": [LAMP], "attrs": {},
                                   "owner": BOB.key},
}


async def load_entity(tenant: str, entity_id: str) -> JSONObject | None:
    return ENTITIES.get((tenant, entity_id))


@pytest.fixture
async def stores() -> AsyncIterator[Stores]:
    opened = open_stores("memory://")
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
def changes() -> list[str]:
    return []


@pytest.fixture
def access(stores: Stores, changes: list[str]) -> AccessService:
    return AccessService(stores.access, clock=Clock(), entity=load_entity,
                         on_change=changes.append, monotonic=Monotonic())


def grant(assignee: str, *actions: Action, ids: tuple[str, ...] = (),
          gid: str = "", **target: Any) -> Grant:
    return Grant(gid, CITY, Assignee.parse(assignee), frozenset(actions),
                 Target(ids=ids, **target))


class CountingStore:
    """The access store, counting grant reads; ``gate`` holds a read until it is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads = 0
        self.gate: asyncio.Event | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def grants(self, tenant: str) -> list[Grant]:
        self.reads += 1
        rows = await self.inner.grants(tenant)
        if self.gate is not None:
            await self.gate.wait()
        return rows  # type: ignore[no-any-return]


# -- the grants cache ------------------------------------------------------------------
async def test_grants_are_read_once_and_again_after_invalidate(stores: Stores) -> None:
    counting = CountingStore(stores.access)
    access = AccessService(counting)  # type: ignore[arg-type]
    await stores.access.put_grant(grant("public", Action.READ, gid="urn:g:1"))
    assert [g.id for g in await access.grants(CITY)] == ["urn:g:1"]
    for grants in await asyncio.gather(*(access.grants(CITY) for _ in range(5))):
        assert [g.id for g in grants] == ["urn:g:1"]
    assert counting.reads == 1
    await stores.access.put_grant(grant("public", Action.READ, gid="urn:g:2"))
    assert len(await access.grants(CITY)) == 1  # cached: another node's change not heard yet
    access.invalidate("other")
    assert len(await access.grants(CITY)) == 1  # another tenant's change keeps this cache
    access.invalidate(CITY)
    assert {g.id for g in await access.grants(CITY)} == {"urn:g:1", "urn:g:2"}
    assert counting.reads == 2
    access.invalidate(None)  # a lost feed: every tenant
    await access.grants(CITY)
    assert counting.reads == 3


async def test_concurrent_callers_share_one_read(stores: Stores) -> None:
    counting = CountingStore(stores.access)
    counting.gate = asyncio.Event()
    access = AccessService(counting)  # type: ignore[arg-type]
    waiting = [asyncio.ensure_future(access.grants(CITY)) for _ in range(10)]
    await asyncio.sleep(0)
    counting.gate.set()
    assert await asyncio.gather(*waiting) == [()] * 10
    assert counting.reads == 1


async def test_a_read_begun_before_a_change_is_not_cached(stores: Stores) -> None:
    counting = CountingStore(stores.access)
    counting.gate = asyncio.Event()
    access = AccessService(counting)  # type: ignore[arg-type]
    stale = asyncio.ensure_future(access.grants(CITY))
    while counting.reads == 0:
        await asyncio.sleep(0)
    # while the read waits, a grant is added and announced: the read may predate it
    await stores.access.put_grant(grant("public", Action.READ, gid="urn:g:new"))
    access.invalidate(CITY)
    counting.gate.set()
    assert await stale == ()  # what it read serves only its own caller
    assert [g.id for g in await access.grants(CITY)] == ["urn:g:new"]
    assert counting.reads == 2


async def test_a_caller_after_a_change_does_not_wait_for_the_older_read(stores: Stores) -> None:
    counting = CountingStore(stores.access)
    counting.gate = asyncio.Event()
    access = AccessService(counting)  # type: ignore[arg-type]
    older = asyncio.ensure_future(access.grants(CITY))
    while counting.reads == 0:
        await asyncio.sleep(0)
    await stores.access.put_grant(grant("public", Action.READ, gid="urn:g:new"))
    access.invalidate(CITY)
    newer = asyncio.ensure_future(access.grants(CITY))
    while counting.reads < 2:
        await asyncio.sleep(0)
    counting.gate.set()
    assert await older == ()
    assert [g.id for g in await newer] == ["urn:g:new"]


async def test_open_and_role_holders_never_touch_the_store(stores: Stores) -> None:
    counting = CountingStore(stores.access)
    access = AccessService(counting)  # type: ignore[arg-type]
    assert await access.view(OPEN, CITY) is UNRESTRICTED
    assert await access.view(READER, CITY) is UNRESTRICTED
    assert (await access.decide(ADMIN, Action.ADMIN, CITY, None)).allowed
    assert (await access.decide(OPEN, Action.WRITE, CITY, ENTITIES[(CITY,
                                                                     "urn:ngsi-ld:Lamp:1")])).allowed
    await access.require(ROOT, Action.ADMIN, "anywhere")
    assert counting.reads == 0
    view = await access.view(READER, "elsewhere")  # no role there: the grants decide
    assert counting.reads == 1 and not view.unrestricted
    assert view.show(ENTITIES[(CITY, "urn:ngsi-ld:Lamp:1")]) is None


async def test_view_and_decide_follow_the_tenant_grants(access: AccessService) -> None:
    lamp = ENTITIES[(CITY, "urn:ngsi-ld:Lamp:2")]
    assert (await access.view(ALICE, CITY)).show(lamp) is None
    await access.add_grant(ADMIN, grant("subject:alice", Action.READ, types=(LAMP,)))
    assert (await access.view(ALICE, CITY)).show(lamp) == lamp  # the cache was dropped
    assert (await access.decide(ALICE, Action.READ, CITY, lamp)).allowed
    write = await access.decide(ALICE, Action.WRITE, CITY, lamp)
    assert not write.allowed and write.visible


# -- require: 401 or 403 ---------------------------------------------------------------
async def test_require_answers_401_to_the_anonymous_and_403_to_others(
        access: AccessService) -> None:
    with pytest.raises(Unauthorized) as anonymous:
        await access.require(ANONYMOUS, Action.SUBSCRIBE, CITY)
    assert anonymous.value.challenge == 'Bearer realm="urbanos"'
    with pytest.raises(Forbidden, match="subscribe on tenant 'city'"):
        await access.require(READER, Action.SUBSCRIBE, CITY, operation="subscription.create",
                             request_id="r-1")
    await access.require(member("s", Role.SUBSCRIBER), Action.SUBSCRIBE, CITY)
    await access.require(OPEN, Action.ADMIN, CITY)
    [denial] = await access.audit(AuditFilter(tenant=CITY))
    assert (denial.principal, denial.operation, denial.outcome, denial.status,
            denial.request_id) == (READER.key, "subscription.create", "denied", 403, "r-1")


# -- grants ----------------------------------------------------------------------------
async def test_a_tenant_admin_adds_and_deletes_grants(access: AccessService,
                                                      changes: list[str]) -> None:
    added = await access.add_grant(ADMIN, grant("claim:groups=parks", Action.READ,
                                                types=(LAMP,)))
    assert added.id.startswith("urn:ngsi-ld:Permission:") and added.assigner == ADMIN.key
    assert [g.id for g in await access.list_grants(ADMIN, CITY)] == [added.id]
    assert changes == [CITY]
    with pytest.raises(AlreadyExists):
        await access.add_grant(ADMIN, grant("public", Action.READ, gid=added.id))
    await access.delete_grant(ADMIN, CITY, added.id)
    assert await access.list_grants(ADMIN, CITY) == []
    assert changes == [CITY, CITY]
    with pytest.raises(ResourceNotFound):
        await access.delete_grant(ADMIN, CITY, added.id)
    ops = [(r.operation, r.outcome) for r in await access.audit(AuditFilter(tenant=CITY))]
    assert ops == [("grant.delete", "ok"), ("grant.add", "ok")]  # newest first


async def test_an_owner_shares_its_entity_and_nothing_more(access: AccessService) -> None:
    mine = grant("subject:bob", Action.READ, ids=("urn:ngsi-ld:Lamp:1",))
    shared = await access.add_grant(ALICE, mine)
    assert shared.assigner == ALICE.key
    for refused in (grant("subject:bob", Action.READ, ids=("urn:ngsi-ld:Lamp:2",)),  # bob's
                    grant("subject:bob", Action.READ, ids=("urn:ngsi-ld:Lamp:1",
                                                           "urn:ngsi-ld:Lamp:2")),
                    grant("subject:bob", Action.READ, ids=("urn:ngsi-ld:Lamp:9",)),  # none
                    grant("subject:bob", Action.READ, id_pattern="urn:ngsi-ld:Lamp:1"),
                    grant("subject:bob", Action.READ, ids=("urn:ngsi-ld:Lamp:1",),
                          types=(LAMP,)),
                    grant("subject:bob", Action.READ)):  # the whole tenant
        with pytest.raises(Forbidden):
            await access.add_grant(ALICE, refused)
    with pytest.raises(Unauthorized):
        await access.add_grant(ANONYMOUS, mine)
    # alice sees the grant she gave, bob does not (he cannot share lamp 1)
    assert [g.id for g in await access.list_grants(ALICE, CITY)] == [shared.id]
    assert await access.list_grants(BOB, CITY) == []
    with pytest.raises(ResourceNotFound):
        await access.get_grant(BOB, CITY, shared.id)
    with pytest.raises(ResourceNotFound):
        await access.delete_grant(BOB, CITY, shared.id)
    with pytest.raises(Unauthorized):
        await access.delete_grant(ANONYMOUS, CITY, shared.id)
    assert (await access.get_grant(ALICE, CITY, shared.id)).id == shared.id
    await access.delete_grant(ALICE, CITY, shared.id)
    assert await access.list_grants(ADMIN, CITY) == []
    denied = await access.audit(AuditFilter(tenant=CITY, outcome="denied"))
    assert {r.operation for r in denied} == {"grant.add", "grant.delete"}
    assert {r.status for r in denied} == {401, 403, 404}


async def test_a_grant_giver_who_lost_the_entity_may_not_revoke(access: AccessService) -> None:
    given = await access.add_grant(ALICE, grant("subject:bob", Action.READ,
                                                ids=("urn:ngsi-ld:Lamp:1",)))
    ENTITIES[(CITY, "urn:ngsi-ld:Lamp:1")]["owner"] = BOB.key
    try:
        assert [g.id for g in await access.list_grants(ALICE, CITY)] == [given.id]
        with pytest.raises(Forbidden):
            await access.delete_grant(ALICE, CITY, given.id)
        await access.delete_grant(BOB, CITY, given.id)  # the owner now
    finally:
        ENTITIES[(CITY, "urn:ngsi-ld:Lamp:1")]["owner"] = ALICE.key


# -- API keys --------------------------------------------------------------------------
async def test_a_key_is_shown_once_stored_as_a_hash_and_verifies(
        access: AccessService, stores: Stores) -> None:
    key, token = await access.create_key(ADMIN, CITY, Role.WRITER, "sensors")
    prefix, _, secret = token.partition(".")
    assert prefix == f"uk_{key.id}" and len(key.id) == 16 and len(secret) == 43
    stored = await stores.access.get_key(key.id)
    assert stored is not None
    assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(stored)
    assert (key.tenant, key.role, key.created_by) == (CITY, Role.WRITER, ADMIN.key)
    assert (await access.verify_key(token)).id == key.id
    for bad, says in ((token[:-1] + ("A" if token[-1] != "A" else "B"), "invalid API key"),
                      (f"uk_{'A' * 16}.{secret}", "invalid API key"),
                      ("uk_short.secret", "malformed"), (secret, "malformed"),
                      (token + ".x", "malformed"), ("", "malformed")):
        with pytest.raises(Unauthorized, match=says) as refused:
            await access.verify_key(bad)
        assert refused.value.challenge == 'ApiKey realm="urbanos"'


async def test_who_may_create_which_key(access: AccessService) -> None:
    with pytest.raises(Forbidden):
        await access.create_key(READER, CITY, Role.READER, "x")
    with pytest.raises(Unauthorized):
        await access.create_key(ANONYMOUS, CITY, Role.READER, "x")
    with pytest.raises(Forbidden):  # a tenant admin makes no platform keys
        await access.create_key(ADMIN, CITY, Role.PLATFORM_ADMIN, "x")
    with pytest.raises(Forbidden):
        await access.create_key(ADMIN, ANY_TENANT, Role.READER, "x")
    with pytest.raises(Forbidden):  # another tenant
        await access.create_key(ADMIN, "other", Role.READER, "x")
    key, _ = await access.create_key(ROOT, ANY_TENANT, Role.PLATFORM_ADMIN, "ops")
    assert key.tenant == ANY_TENANT
    with pytest.raises(BadRequestData, match="name"):
        await access.create_key(ADMIN, CITY, Role.READER, "  ")
    assert [k.id for k in await access.list_keys(ROOT, None)] == [key.id]
    with pytest.raises(Forbidden):
        await access.list_keys(ADMIN, None)
    assert await access.list_keys(ADMIN, CITY) == []


async def test_expired_and_revoked_keys_are_refused(stores: Stores) -> None:
    clock, ticks = Clock(), Monotonic()
    access = AccessService(stores.access, clock=clock, monotonic=ticks, key_ttl=10)
    _, short = await access.create_key(OPEN, CITY, Role.READER, "short",
                                       expires_at="2030-01-12T00:00:00Z")
    _, long = await access.create_key(OPEN, CITY, Role.READER, "long")
    await access.verify_key(short)
    clock.day = 12
    with pytest.raises(Unauthorized, match="expired"):
        await access.verify_key(short)
    with pytest.raises(BadRequestData, match="in the past"):
        await access.create_key(OPEN, CITY, Role.READER, "late", expires_at="2030-01-01T00:00Z")
    with pytest.raises(BadRequestData, match="not a date-time"):
        await access.create_key(OPEN, CITY, Role.READER, "late", expires_at="soon")

    # revoked here: refused at once
    key = await access.verify_key(long)
    await access.revoke_key(ADMIN, key.id)
    with pytest.raises(Unauthorized, match="revoked"):
        await access.verify_key(long)
    with pytest.raises(ResourceNotFound):
        await access.revoke_key(ADMIN, "B" * 16)
    with pytest.raises(ResourceNotFound):  # another tenant's admin does not see it
        await access.revoke_key(member("x", Role.TENANT_ADMIN, tenant="other"), key.id)


async def test_a_key_revoked_by_another_process_stops_working(stores: Stores) -> None:
    ticks = Monotonic()
    node = AccessService(stores.access, monotonic=ticks, key_ttl=10)
    cli = AccessService(stores.access)  # ``urbanos keys revoke`` on the same store
    key, token = await cli.create_key(OPEN, CITY, Role.READER, "k")
    await node.verify_key(token)
    await cli.revoke_key(OPEN, key.id)
    await node.verify_key(token)  # cached: no feed from the CLI
    ticks.now += 10
    with pytest.raises(Unauthorized, match="revoked"):
        await node.verify_key(token)

    key, token = await cli.create_key(OPEN, CITY, Role.READER, "k2")
    await node.verify_key(token)
    await cli.revoke_key(OPEN, key.id)
    node.invalidate(CITY)  # another node's announcement: at once
    with pytest.raises(Unauthorized, match="revoked"):
        await node.verify_key(token)


async def test_last_use_is_kept_in_memory_and_flushed(stores: Stores) -> None:
    clock = Clock()
    access = AccessService(stores.access, clock=clock)
    key, token = await access.create_key(OPEN, CITY, Role.READER, "k")
    clock.day = 11
    await access.verify_key(token)
    assert (await stores.access.get_key(key.id)).last_used_at is None  # type: ignore[union-attr]
    [listed] = await access.list_keys(OPEN, CITY)
    assert listed.last_used_at == "2030-01-11T00:00:00.000Z"  # this node's, not stored yet
    await access.flush()
    stored = await stores.access.get_key(key.id)
    assert stored is not None and stored.last_used_at == "2030-01-11T00:00:00.000Z"
    clock.day = 13
    await access.verify_key(token)
    await access.aclose()
    stored = await stores.access.get_key(key.id)
    assert stored is not None and stored.last_used_at == "2030-01-13T00:00:00.000Z"


async def test_a_failed_flush_keeps_the_uses_for_the_next(stores: Stores) -> None:
    class Failing(CountingStore):
        fail = True

        async def touch_keys(self, used: dict[str, str]) -> None:
            if self.fail:
                raise OSError("disk gone")
            await self.inner.touch_keys(used)

    store = Failing(stores.access)
    access = AccessService(store)  # type: ignore[arg-type]
    key, token = await access.create_key(OPEN, CITY, Role.READER, "k")
    await access.verify_key(token)
    with pytest.raises(OSError):
        await access.flush()
    store.fail = False
    await access.flush()
    stored = await stores.access.get_key(key.id)
    assert stored is not None and stored.last_used_at is not None


# -- issuers and tenants ---------------------------------------------------------------
async def test_issuers_per_tenant_and_for_the_platform(stores: Stores) -> None:
    reloads: list[int] = []
    access = AccessService(stores.access, on_issuers=lambda: reloads.append(1))
    from urbanos.services.access import Issuer

    await access.put_issuer(ADMIN, Issuer(CITY, "https://idp.city.example"))
    with pytest.raises(Forbidden):
        await access.put_issuer(ADMIN, Issuer(ANY_TENANT, "https://idp.example"))
    with pytest.raises(Forbidden):
        await access.put_issuer(ADMIN, Issuer("other", "https://idp.other.example"))
    await access.put_issuer(ROOT, Issuer(ANY_TENANT, "https://idp.example"))
    assert reloads == [1, 1]
    assert {i.url for i in await access.issuers(ADMIN, CITY)} == {
        "https://idp.city.example", "https://idp.example"}
    with pytest.raises(Forbidden):
        await access.issuers(ADMIN, None)
    assert len(await access.issuers(ROOT, None)) == 2
    with pytest.raises(ResourceNotFound):
        await access.delete_issuer(ADMIN, CITY, "https://nope.example")
    await access.delete_issuer(ADMIN, CITY, "https://idp.city.example")
    assert [i.url for i in await access.issuers(ROOT, None)] == ["https://idp.example"]
    await access.create_key(OPEN, "north", Role.READER, "k")
    assert await access.tenants(ROOT) == ["north"]
    with pytest.raises(Forbidden):
        await access.tenants(ADMIN)


# -- audit -----------------------------------------------------------------------------
async def test_audited_writes_commit_their_record_with_them(access: AccessService,
                                                            stores: Stores) -> None:
    note = access.note(ALICE, "entity.create", "req-7")
    entity = {"id": "urn:ngsi-ld:Lamp:5", "type": [LAMP], "attrs": {}}

    def plan(current: dict[str, JSONObject]) -> tuple[list[Write], str]:
        return [Write("put", "urn:ngsi-ld:Lamp:5", entity)], "done"

    assert await stores.entities.modify(CITY, ["urn:ngsi-ld:Lamp:5"],
                                        access.audited(note, plan)) == "done"
    [record] = await access.audit(AuditFilter(tenant=CITY))
    assert (record.principal, record.client, record.operation, record.entity_ids,
            record.outcome, record.request_id) == (
        ALICE.key, None, "entity.create", ("urn:ngsi-ld:Lamp:5",), "ok", "req-7")

    def failing(current: dict[str, JSONObject]) -> tuple[list[Write], str]:
        raise BadRequestData("no")

    with pytest.raises(BadRequestData):
        await stores.entities.modify(CITY, ["urn:ngsi-ld:Lamp:6"],
                                     access.audited(note, failing))
    assert len(stores.access.notes) == 0
    assert len(await access.audit(AuditFilter(tenant=CITY))) == 1


async def test_retention_purges_old_records_and_zero_keeps_all(stores: Stores) -> None:
    clock = Clock()
    keep_all = AccessService(stores.access, clock=clock)
    access = AccessService(stores.access, clock=clock, audit_retention_days=3)
    for day in (1, 5, 8, 10):
        await access.record(AuditRecord(f"2030-01-{day:02d}T00:00:00.000Z", "p", None, CITY,
                                        "grant.add", (), "ok", 201))
    assert await keep_all.purge() == 0
    assert await access.purge() == 2  # older than 2030-01-07
    assert [r.time[:10] for r in await access.audit(AuditFilter())] == ["2030-01-10",
                                                                        "2030-01-08"]
    task = asyncio.ensure_future(access.run_retention(interval=3600))
    clock.day = 20
    await asyncio.sleep(0.01)
    task.cancel()
    assert await access.audit(AuditFilter()) == []  # ran once at start, with day 20


async def test_retention_runs_on_the_leading_node_only(stores: Stores) -> None:
    clock = Clock()
    asked: list[str] = []

    async def not_leading(job: str) -> bool:
        asked.append(job)
        return False

    follower = AccessService(stores.access, clock=clock, audit_retention_days=1,
                             leader=not_leading)
    await follower.record(AuditRecord("2030-01-01T00:00:00.000Z", "p", None, CITY,
                                      "grant.add", (), "ok", 201))
    task = asyncio.ensure_future(follower.run_retention(interval=3600))
    while not asked:
        await asyncio.sleep(0)
    task.cancel()
    assert asked == ["audit.retention"]
    assert len(await follower.audit(AuditFilter())) == 1  # another node purges
