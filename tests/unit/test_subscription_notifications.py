"""Which subscriptions a change fires and the Notifications they make (clause 5.8.6), on the
memory stores; the write hooks turn every entity write into the Change the outbox would hold."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from urbanos.core.change import Change
from urbanos.core.entity import expand_entity
from urbanos.core.jsonld import core_term_map
from urbanos.outbound import OutboundPolicy
from urbanos.services.contexts import ContextService
from urbanos.services.entities import EntityService
from urbanos.services.subscriptions import SubscriptionService
from urbanos.storage.base import Write
from urbanos.storage.memory import MemoryStore
from urbanos.storage.subscriptions import MemorySubscriptionStore
from urbanos.types import JSONObject

D = "https://uri.etsi.org/ngsi-ld/default-context/"
NULL = "urn:ngsi-ld:null"
TERMS = core_term_map()


@dataclass
class Clock:
    now: str = "2030-01-01T00:00:00.000Z"

    def __call__(self) -> str:
        return self.now


@dataclass
class Env:
    store: MemoryStore
    subs: SubscriptionService
    entities: EntityService
    clock: Clock
    changes: list[Change] = field(default_factory=list)

    async def subscribe(self, tenant: str = "", **members: Any) -> str:
        payload: JSONObject = {"type": "Subscription", "entities": [{"type": "Building"}],
                               "notification": {"endpoint": {"uri": "http://receiver/n"}}}
        notification = members.pop("notification", {})
        payload.update(members)
        payload["notification"].update(notification)
        return await self.subs.create(tenant, payload, TERMS, None)

    async def create(self, eid: str = "urn:b:1", tenant: str = "", **attrs: Any) -> None:
        body = {"id": eid, "type": attrs.pop("type", "Building"),
                "name": {"type": "Property", "value": "Eiffel"}, **attrs}
        await self.entities.create(tenant, expand_entity(body, TERMS, self.clock.now))

    async def fired(self) -> list[dict[str, Any]]:
        """The notification bodies of the changes since the last call."""
        out: list[dict[str, Any]] = []
        changes, self.changes[:] = list(self.changes), []
        for change in changes:
            out.extend(o.body for o in await self.subs.notifications_for(change))
        return out


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    store = MemoryStore()
    clock = Clock()
    contexts = ContextService(OutboundPolicy())
    subs = SubscriptionService(MemorySubscriptionStore(), contexts, clock, entities=store)
    e = Env(store, subs, EntityService(store, clock), clock)

    def hook(tenant: str, writes: list[Write]) -> None:
        e.changes.extend(Change(tenant, w.entity_id, w.before, w.entity, clock.now)
                         for w in writes)

    store.write_hooks.append(hook)
    yield e
    await contexts.aclose()


def attr(name: str, value: Any, kind: str = "Property") -> dict[str, list[JSONObject]]:
    member = {"Property": "value", "Relationship": "object"}[kind]
    return {D + name: [{"type": kind, member: value}]}


async def test_default_triggers_fire_on_creation_and_update(env: Env) -> None:
    sid = await env.subscribe()
    await env.create()
    await env.entities.update("", "urn:b:1", attr("name", "Tour"))
    created, updated = await env.fired()
    assert created["type"] == "Notification" and created["subscriptionId"] == sid
    assert created["id"].startswith("urn:ngsi-ld:Notification:")
    assert created["triggerReason"] == "attributeCreated"
    assert updated["triggerReason"] == "attributeUpdated"
    assert updated["data"] == [{"id": "urn:b:1", "type": "Building",
                                "name": {"type": "Property", "value": "Tour"}}]


async def test_entity_triggers(env: Env) -> None:
    await env.subscribe(notificationTrigger=["entityCreated", "entityDeleted"],
                        notification={"format": "keyValues"})
    await env.create()
    await env.entities.update("", "urn:b:1", attr("name", "Tour"))
    await env.entities.delete("", "urn:b:1")
    created, deleted = await env.fired()
    assert created["triggerReason"] == "entityCreated"
    assert created["data"][0]["name"] == "Eiffel"
    assert deleted["triggerReason"] == "entityDeleted"
    assert deleted["data"] == [{"id": "urn:b:1", "type": "Building",
                                "deletedAt": env.clock.now}]


async def test_entity_selectors_and_watched_attributes(env: Env) -> None:
    await env.subscribe(entities=[{"type": "Building", "idPattern": "urn:b:[12]$"}],
                        watchedAttributes=["height"])
    await env.create("urn:b:1")
    await env.create("urn:b:3")
    await env.create("urn:x:1", type="Tower")
    assert await env.fired() == []  # none has a height yet
    await env.entities.update("", "urn:b:1", attr("name", "Tour"))
    assert await env.fired() == []  # name is not watched
    for eid in ("urn:b:1", "urn:b:3", "urn:x:1"):
        await env.entities.append("", eid, attr("height", 300), no_overwrite=False)
    assert [b["data"][0]["id"] for b in await env.fired()] == ["urn:b:1"]


async def test_watched_attributes_without_entities(env: Env) -> None:
    payload = {"type": "Subscription", "watchedAttributes": ["level"],
               "notification": {"endpoint": {"uri": "http://receiver/n"}}}
    await env.subs.create("", payload, TERMS, None)
    await env.create("urn:b:1", type="River", level={"type": "Property", "value": 3})
    await env.create("urn:b:2", type="Lake")
    assert [b["data"][0]["id"] for b in await env.fired()] == ["urn:b:1"]


async def test_q_geoq_and_scope(env: Env) -> None:
    await env.subscribe(q="height>100;name==\"Tour\"")
    await env.subscribe(geoQ={"georel": "near;maxDistance==1000", "geometry": "Point",
                              "coordinates": [2.29, 48.85]})
    await env.subscribe(scopeQ="/Paris/#")
    await env.create(height={"type": "Property", "value": 300})
    await env.entities.update("", "urn:b:1", attr("name", "Tour"))
    fired = await env.fired()
    assert len(fired) == 1 and fired[0]["triggerReason"] == "attributeUpdated"
    await env.create("urn:b:2", scope="/Paris/Centre",
                     location={"type": "GeoProperty",
                               "value": {"type": "Point", "coordinates": [2.2945, 48.8584]}})
    assert len(await env.fired()) == 2


async def test_linked_entity_q(env: Env) -> None:
    await env.subscribe(entities=[{"type": "Vehicle"}], q="isConnectedTo{batteryLevel}<0.5")
    await env.create("urn:d:low", type="Device", batteryLevel={"type": "Property", "value": 0.3})
    await env.create("urn:d:full", type="Device",
                     batteryLevel={"type": "Property", "value": 0.9})
    for vid, device in (("urn:v:ok", "urn:d:full"), ("urn:v:low", "urn:d:low")):
        await env.create(vid, type="Vehicle",
                         isConnectedTo={"type": "Relationship", "object": device})
    assert [b["data"][0]["id"] for b in await env.fired()] == ["urn:v:low"]


async def test_attribute_deleted_shows_the_null(env: Env) -> None:
    await env.subscribe(watchedAttributes=["name"], notificationTrigger=["attributeDeleted"])
    await env.create(height={"type": "Property", "value": 300})
    await env.entities.delete_attr("", "urn:b:1", D + "height", dataset_id=None,
                                   delete_all=False)
    assert await env.fired() == []
    await env.entities.delete_attr("", "urn:b:1", D + "name", dataset_id=None, delete_all=False)
    (body,) = await env.fired()
    assert body["triggerReason"] == "attributeDeleted"
    assert body["data"][0]["name"] == {"type": "Property", "value": NULL}
    assert set(body["data"][0]) == {"id", "type", "name"}
    await env.entities.delete("", "urn:b:1")
    assert await env.fired() == []  # name is gone already: nothing watched was deleted


async def test_entity_deletion_with_attribute_deleted_and_sys_attrs(env: Env) -> None:
    await env.subscribe(watchedAttributes=["name"], notificationTrigger=["attributeDeleted"],
                        notification={"sysAttrs": True})
    await env.create(height={"type": "Property", "value": 300})
    env.clock.now = "2030-01-02T00:00:00.000Z"
    await env.entities.delete("", "urn:b:1")
    (body,) = await env.fired()
    entity = body["data"][0]
    assert set(entity) == {"id", "type", "createdAt", "modifiedAt", "deletedAt", "name"}
    assert entity["deletedAt"] == entity["name"]["deletedAt"] == "2030-01-02T00:00:00.000Z"
    assert entity["name"]["value"] == NULL


async def test_show_changes(env: Env) -> None:
    await env.subscribe(notification={"showChanges": True},
                        notificationTrigger=["attributeCreated", "attributeUpdated",
                                             "attributeDeleted", "entityDeleted"])
    await env.create(owner={"type": "Relationship", "object": "urn:p:1"})
    await env.entities.update("", "urn:b:1", attr("owner", "urn:p:2", "Relationship"))
    await env.entities.delete("", "urn:b:1")
    created, updated, deleted = await env.fired()
    assert "previousValue" not in str(created)
    assert updated["data"][0]["owner"] == {"type": "Relationship", "object": "urn:p:2",
                                           "previousObject": "urn:p:1"}
    assert "previousValue" not in updated["data"][0]["name"]
    assert deleted["data"][0]["name"] == {"type": "Property", "value": NULL,
                                          "previousValue": "Eiffel"}


async def test_paused_expired_and_periodic_subscriptions_do_not_fire_on_change(env: Env) -> None:
    await env.subscribe(isActive=False)
    await env.subscribe(expiresAt="2030-01-01T00:00:05Z")
    await env.subscribe(timeInterval=10)
    env.clock.now = "2030-01-01T00:00:06.000Z"
    await env.create()
    assert await env.fired() == []


async def test_throttling(env: Env) -> None:
    await env.subscribe(throttling=10)
    await env.create()
    assert len(await env.fired()) == 1
    env.clock.now = "2030-01-01T00:00:05.000Z"
    await env.entities.update("", "urn:b:1", attr("name", "A"))
    assert await env.fired() == []
    env.clock.now = "2030-01-01T00:00:11.000Z"
    await env.entities.update("", "urn:b:1", attr("name", "B"))
    assert len(await env.fired()) == 1


async def test_cooldown_after_a_failure(env: Env) -> None:
    sid = await env.subscribe(notification={"endpoint": {"uri": "http://r/n", "cooldown": 2000}})
    await env.subs.delivered("", sid, ok=False, at=env.clock.now, error="503")
    await env.create()
    assert await env.fired() == []
    env.clock.now = "2030-01-01T00:00:03.000Z"
    await env.entities.update("", "urn:b:1", attr("name", "A"))
    assert len(await env.fired()) == 1


async def test_tenants_are_isolated(env: Env) -> None:
    await env.subscribe("t1")
    await env.create(tenant="t2")
    assert await env.fired() == []
    await env.create(tenant="t1")
    assert len(await env.fired()) == 1


async def test_formats_attributes_and_headers(env: Env) -> None:
    sid = await env.subscribe(
        "city",
        notification={"attributes": ["height"], "format": "concise",
                      "endpoint": {"uri": "http://r/n", "accept": "application/ld+json",
                                   "receiverInfo": [{"key": "X-Key", "value": "v"}]}},
    )
    await env.create(tenant="city", height={"type": "Property", "value": 300})
    (out,) = await env.subs.notifications_for(env.changes.pop())
    assert out.subscription_id == sid and out.tenant == "city"
    assert out.headers == {"Content-Type": "application/ld+json", "NGSILD-Tenant": "city",
                           "X-Key": "v"}
    core = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
    assert out.body["@context"] == core
    assert out.body["data"] == [{"id": "urn:b:1", "type": "Building", "height": 300,
                                 "@context": core}]
    assert out.endpoint.receiver_info == (("X-Key", "v"),)


async def test_periodic_notifications(env: Env) -> None:
    sid = await env.subscribe(timeInterval=5)
    await env.create()
    assert await env.subs.periodic_due("2030-01-01T00:00:04.000Z") == []
    (out,) = await env.subs.periodic_due("2030-01-01T00:00:05.000Z")
    assert out.subscription_id == sid and out.body["data"][0]["id"] == "urn:b:1"
    assert "triggerReason" not in out.body
    assert await env.subs.periodic_due("2030-01-01T00:00:09.000Z") == []
    assert len(await env.subs.periodic_due("2030-01-01T00:00:10.000Z")) == 1


async def test_delivery_bookkeeping(env: Env) -> None:
    sid = await env.subscribe()
    shown = await env.subs.get("", sid)
    assert shown is not None and "timesSent" not in shown["notification"]
    await env.subs.delivered("", sid, ok=True, at="2030-01-01T00:00:01.000Z")
    await env.subs.delivered("", sid, ok=False, at="2030-01-01T00:00:02.000Z", error="503")
    shown = await env.subs.get("", sid)
    assert shown is not None
    n = shown["notification"]
    assert (n["timesSent"], n["timesFailed"], n["status"]) == (2, 1, "failed")
    assert n["lastSuccess"] == "2030-01-01T00:00:01.000Z"
    assert n["lastFailure"] == n["lastNotification"] == "2030-01-01T00:00:02.000Z"
    assert shown["status"] == "active"
    assert await env.subs.get("", "urn:unknown") is None


async def test_invalidate_reloads_from_the_store(env: Env) -> None:
    await env.subscribe()
    other = SubscriptionService(env.subs.store, env.subs.contexts, env.clock,
                                entities=env.store)
    await other.open()
    await env.create()
    change = env.changes.pop()
    assert len(await other.notifications_for(change)) == 1
    await env.subs.delete("", (await env.subs.store.load())[0].doc["id"])
    assert len(await other.notifications_for(change)) == 1  # still the stale index
    other.invalidate("")
    assert await other.notifications_for(change) == []


async def test_many_subscriptions_do_not_slow_matching(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 subscriptions on other entity types cost one dictionary lookup each change:
    the change is matched against the one subscription on its type, never against them."""
    await env.subscribe()
    for n in range(10_000):
        await env.subscribe(entities=[{"type": f"Type{n}"}], q="height>100")
    assert len((await env.subs._index("")).subs) == 10_001
    await env.create()
    change = env.changes.pop()
    examined: list[str] = []
    match_one = env.subs._match_one

    async def counted(sub: Any, *args: Any) -> Any:
        examined.append(sub.id)
        return await match_one(sub, *args)

    monkeypatch.setattr(env.subs, "_match_one", counted)
    assert len(await env.subs.notifications_for(change)) == 1
    assert len(examined) == 1


async def test_pick_and_omit(env: Env) -> None:
    await env.subscribe(notification={"pick": ["id", "name"]})
    await env.subscribe(notification={"omit": "type,height"})
    await env.create(height={"type": "Property", "value": 300})
    picked, omitted = await env.fired()
    assert picked["data"] == [{"id": "urn:b:1", "name": {"type": "Property", "value": "Eiffel"}}]
    assert omitted["data"] == [{"id": "urn:b:1", "name": {"type": "Property", "value": "Eiffel"}}]


async def test_an_invalidation_during_a_load_is_not_lost() -> None:
    """Another node's change that lands while the index loads forces a reload next time."""
    from urbanos.services.subscriptions import SubscriptionService
    from urbanos.storage.subscriptions import MemorySubscriptionStore

    class SlowStore(MemorySubscriptionStore):
        service: SubscriptionService | None = None

        async def load(self, tenant: str | None = None):  # type: ignore[no-untyped-def]
            rows = await super().load(tenant)
            assert self.service is not None
            self.service.invalidate("t")  # arrives mid-load
            return rows

    store = SlowStore()
    await store.open()

    class Contexts:
        policy = None

    service = SubscriptionService(store, Contexts())  # type: ignore[arg-type]
    store.service = service
    await service._index("t")
    assert "t" not in service._indexes  # the possibly stale load was not kept
