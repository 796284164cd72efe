"""Access control through the NGSI-LD API: who sees and changes what, on every store.

Callers are real: bearer tokens verified against a JWKS served over HTTP, API keys made by
the access service. Grants are given through the access service (their admin API has its
own tests); each test then asserts what the API answers and what is stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.http.access_harness import (
    AUDIENCE as AUD,
)
from tests.http.access_harness import (
    Broker,
    LocalIssuer,
    broker,
    local_issuer,
    secured_settings,
)
from urbanos.core.policy import OPEN, Action, Assignee, Grant, Role, Target

DEF = "https://uri.etsi.org/ngsi-ld/default-context/"
PARK, BUILDING, NOTE = DEF + "Park", DEF + "Building", DEF + "Note"
E = "/ngsi-ld/v1/entities"
AT = "2026-12-01T09:00:00.000Z"  # history keeps what was observed at a time


def park(n: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Park:{n}", "type": "Park",
            "name": {"type": "Property", "value": f"park {n}", "observedAt": AT},
            "secret": {"type": "Property", "value": n, "observedAt": AT},
            "location": {"type": "GeoProperty",
                         "value": {"type": "Point", "coordinates": [139.7, 35.6]}},
            **extra}


def building(n: int) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Building:{n}", "type": "Building",
            "name": {"type": "Property", "value": f"building {n}"}}


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with local_issuer() as it:
        yield it


@pytest.fixture
async def city(store_url: str, issuer: LocalIssuer) -> AsyncIterator[Broker]:
    async with broker(secured_settings(store_url, issuer)) as b:
        yield b


async def grant(b: Broker, assignee: str, actions: set[Action], tenant: str = "",
                **target: Any) -> Grant:
    g = Grant(id=f"urn:ngsi-ld:Permission:{len(await b.services.access.grants(tenant))}",
              tenant=tenant, assignee=Assignee.parse(assignee), actions=frozenset(actions),
              target=Target(**target))
    return await b.services.access.add_grant(OPEN, g)


async def key(b: Broker, role: Role, tenant: str = "") -> str:
    _, token = await b.services.access.create_key(OPEN, tenant, role, f"{role.value} key")
    return token


async def seed(b: Broker) -> None:
    """Two parks and a building, written by a writer's API key."""
    async with b.client(key=await key(b, Role.WRITER)) as w:
        for doc in (park(1), park(2), building(1)):
            r = await w.post(E, json=doc)
            assert r.status_code == 201, r.text


# -- authentication at the door ----------------------------------------------------------

async def test_no_credentials_and_nothing_public_asks_to_log_in(city: Broker) -> None:
    await seed(city)
    async with city.client() as anon:
        r = await anon.get(E, params={"type": "Park"})
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.json()["type"].endswith("Unauthorized")
        r = await anon.post(E, json=park(9))
        assert r.status_code == 401
    async with city.client(key=await key(city, Role.READER)) as reader:
        assert (await reader.get(E + "/urn:ngsi-ld:Park:9")).status_code == 404  # not made


async def test_bad_credentials_are_401_and_change_nothing(city: Broker, issuer: LocalIssuer
                                                          ) -> None:
    await seed(city)
    for headers in ({"Authorization": "Bearer not.a.jwt"},
                    {"Authorization": "Bearer " + issuer.token("x", exp=1)},
                    {"X-Api-Key": "uk_nope.nope"},
                    {"Authorization": "Basic dXNlcjpwYXNz"}):
        async with city.client() as c:
            r = await c.delete(E + "/urn:ngsi-ld:Park:1", headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert "WWW-Authenticate" in r.headers
    async with city.client(key=await key(city, Role.READER)) as reader:
        assert (await reader.get(E + "/urn:ngsi-ld:Park:1")).status_code == 200


async def test_a_revoked_key_stops_working(city: Broker) -> None:
    stored, token = await city.services.access.create_key(OPEN, "", Role.READER, "kiosk")
    async with city.client(key=token) as c:
        assert (await c.get(E, params={"type": "Park"})).status_code == 200
        await city.services.access.revoke_key(OPEN, stored.id)
        assert (await c.get(E, params={"type": "Park"})).status_code == 401


# -- roles ---------------------------------------------------------------------------------

async def test_a_reader_reads_and_may_not_write(city: Broker) -> None:
    await seed(city)
    async with city.client(key=await key(city, Role.READER)) as reader:
        r = await reader.get(E, params={"type": "Park,Building", "count": "true"})
        assert r.status_code == 200 and r.headers["NGSILD-Results-Count"] == "3"
        r = await reader.patch(E + "/urn:ngsi-ld:Park:1/attrs",
                               json={"name": {"type": "Property", "value": "x"}})
        assert r.status_code == 403
        assert r.json()["type"].endswith("AccessDenied")
        r = await reader.post(E, json=park(5))
        assert r.status_code == 403
        r = await reader.get(E + "/urn:ngsi-ld:Park:1", params={"options": "keyValues"})
        assert r.json()["name"] == "park 1"


async def test_a_key_is_valid_only_in_its_tenant(city: Broker) -> None:
    token = await key(city, Role.WRITER, tenant="osaka")
    async with city.client(key=token, tenant="osaka") as mine:
        assert (await mine.post(E, json=park(1))).status_code == 201
    async with city.client(key=token, tenant="kobe") as other:
        assert (await other.post(E, json=park(1))).status_code == 401
        assert (await other.get(E, params={"type": "Park"})).status_code == 401
    async with city.client(key=token) as default:
        assert (await default.get(E + "/urn:ngsi-ld:Park:1")).status_code == 401


async def test_token_roles_per_tenant(city: Broker, issuer: LocalIssuer) -> None:
    token = issuer.token("kenji", urbanos_tenants={"osaka": ["writer"]})
    async with city.client(token=token, tenant="osaka") as osaka:
        assert (await osaka.post(E, json=park(1))).status_code == 201
    async with city.client(token=token, tenant="kobe") as kobe:
        r = await kobe.post(E, json=park(1))
        assert r.status_code == 403  # authenticated, no rights there
    async with city.client(key=await key(city, Role.READER, tenant="kobe"),
                           tenant="kobe") as reader:
        r = await reader.get(E, params={"type": "Park"})
        assert r.status_code == 404 or r.json() == []  # nothing was written in kobe


# -- grants, attributes and every representation --------------------------------------------

async def test_public_open_data_hides_what_the_grant_hides(city: Broker) -> None:
    await seed(city)
    await grant(city, "public", {Action.READ}, types=(PARK,), hidden=(DEF + "secret",))
    async with city.client() as anon:
        r = await anon.get(E, params={"type": "Park", "count": "true"})
        assert r.status_code == 200
        assert r.headers["NGSILD-Results-Count"] == "2"
        assert all("secret" not in e and "name" in e for e in r.json())
        r = await anon.get(E, params={"type": "Park", "options": "keyValues"})
        assert all(set(e) == {"id", "type", "name", "location"} for e in r.json())
        r = await anon.get(E, params={"type": "Park", "options": "concise"})
        assert all("secret" not in e for e in r.json())
        r = await anon.get(E, params={"type": "Park"}, headers={"Accept": "application/geo+json"})
        assert all("secret" not in f["properties"] for f in r.json()["features"])
        r = await anon.get(E + "/urn:ngsi-ld:Park:1", params={"attrs": "secret,name"})
        assert r.status_code == 200 and "secret" not in r.json()
        # a hidden attribute cannot be tested by q, nor counted
        r = await anon.get(E, params={"type": "Park", "q": "secret==1", "count": "true"})
        assert r.json() == [] and r.headers["NGSILD-Results-Count"] == "0"
        # what is not public is not found, not forbidden
        assert (await anon.get(E + "/urn:ngsi-ld:Building:1")).status_code == 404
        r = await anon.get(E, params={"type": "Building", "count": "true"})
        assert r.json() == [] and r.headers["NGSILD-Results-Count"] == "0"
        r = await anon.get(E, params={"q": "name==\"building 1\""})
        assert r.json() == []
        # discovery names only what can be seen
        types = (await anon.get("/ngsi-ld/v1/types")).json()["typeList"]
        assert types == ["Park"]
        attrs = (await anon.get("/ngsi-ld/v1/attributes")).json()["attributeList"]
        assert "secret" not in attrs and "name" in attrs
        assert (await anon.get("/ngsi-ld/v1/types/Building")).status_code == 404
        # and writing still needs credentials
        r = await anon.patch(E + "/urn:ngsi-ld:Park:1/attrs",
                             json={"name": {"type": "Property", "value": "x"}})
        assert r.status_code == 401


async def test_a_grant_narrowed_to_attributes(city: Broker, issuer: LocalIssuer) -> None:
    await seed(city)
    await grant(city, "subject:aiko", {Action.READ, Action.WRITE}, types=(PARK,),
                attributes=(DEF + "name",))
    async with city.client(token=issuer.token("aiko")) as aiko:
        body = (await aiko.get(E + "/urn:ngsi-ld:Park:2")).json()
        assert set(body) == {"id", "type", "name"}
        r = await aiko.patch(E + "/urn:ngsi-ld:Park:2/attrs",
                             json={"name": {"type": "Property", "value": "renamed"}})
        assert r.status_code == 204, r.text
        r = await aiko.patch(E + "/urn:ngsi-ld:Park:2/attrs",
                             json={"secret": {"type": "Property", "value": 0}})
        assert r.status_code == 404  # an attribute it cannot see
        r = await aiko.delete(E + "/urn:ngsi-ld:Park:2")
        assert r.status_code == 404  # would remove attributes it cannot see
        assert (await aiko.get(E + "/urn:ngsi-ld:Building:1")).status_code == 404
    async with city.client(key=await key(city, Role.READER)) as reader:
        body = (await reader.get(E + "/urn:ngsi-ld:Park:2",
                                 params={"options": "keyValues"})).json()
        assert body["name"] == "renamed" and body["secret"] == 2


async def test_a_batch_answers_per_entity(city: Broker, issuer: LocalIssuer) -> None:
    await seed(city)
    await grant(city, "claim:groups=parks", {Action.READ, Action.WRITE}, types=(PARK,))
    token = issuer.token("yui", groups=["parks"])
    async with city.client(token=token) as yui:
        r = await yui.post("/ngsi-ld/v1/entityOperations/upsert",
                           json=[park(3), building(1), building(2)])
        assert r.status_code == 207, r.text
        body = r.json()
        assert body["success"] == ["urn:ngsi-ld:Park:3"]
        status = {e["entityId"]: e["error"]["status"] for e in body["errors"]}
        assert status == {"urn:ngsi-ld:Building:1": 404, "urn:ngsi-ld:Building:2": 403}
    async with city.client(key=await key(city, Role.READER)) as reader:
        assert (await reader.get(E + "/urn:ngsi-ld:Park:3")).status_code == 200
        assert (await reader.get(E + "/urn:ngsi-ld:Building:2")).status_code == 404
        kv = (await reader.get(E + "/urn:ngsi-ld:Building:1",
                               params={"options": "keyValues"})).json()
        assert kv["name"] == "building 1"  # unchanged


async def test_the_creator_owns_what_it_creates(city: Broker, issuer: LocalIssuer) -> None:
    await grant(city, "authenticated", {Action.WRITE}, types=(NOTE,))
    note = {"id": "urn:ngsi-ld:Note:1", "type": "Note",
            "text": {"type": "Property", "value": "mine"}}
    async with city.client(token=issuer.token("haru")) as haru:
        assert (await haru.post(E, json=note)).status_code == 201
        assert (await haru.get(E + "/urn:ngsi-ld:Note:1")).json()["text"]["value"] == "mine"
        r = await haru.get(E + "/urn:ngsi-ld:Note:1", params={"options": "sysAttrs"})
        assert "owner" not in r.json()
    async with city.client(token=issuer.token("sora")) as sora:
        assert (await sora.get(E + "/urn:ngsi-ld:Note:1")).status_code == 404
        assert (await sora.get(E, params={"type": "Note"})).json() == []


async def test_specific_access_policy_auth_read(city: Broker, issuer: LocalIssuer) -> None:
    doc = park(7, specificAccessPolicy={"type": "Property", "value": "AUTH_READ"})
    async with city.client(key=await key(city, Role.WRITER)) as w:
        assert (await w.post(E, json=doc)).status_code == 201
        assert (await w.post(E, json=park(8))).status_code == 201
    async with city.client(token=issuer.token("someone")) as user:
        r = await user.get(E, params={"type": "Park"})
        assert [e["id"] for e in r.json()] == ["urn:ngsi-ld:Park:7"]
        r = await user.patch(E + "/urn:ngsi-ld:Park:7/attrs",
                             json={"name": {"type": "Property", "value": "x"}})
        assert r.status_code == 403


# -- temporal and subscriptions ------------------------------------------------------------

async def test_history_hides_what_the_reader_may_not_see(city: Broker) -> None:
    await seed(city)
    await grant(city, "public", {Action.READ}, types=(PARK,), hidden=(DEF + "secret",))
    async with city.client() as anon:
        r = await anon.get("/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:Park:1")
        assert r.status_code == 200, r.text
        assert "secret" not in r.json() and "name" in r.json()
        r = await anon.get("/ngsi-ld/v1/temporal/entities",
                           params={"type": "Park,Building", "count": "true"})
        assert r.headers["NGSILD-Results-Count"] == "2"
        assert all("secret" not in e for e in r.json())
        r = await anon.get("/ngsi-ld/v1/temporal/entities",
                           params={"type": "Park", "q": "secret==1"})
        assert r.json() == []
        r = await anon.get("/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:Building:1")
        assert r.status_code == 404


async def test_a_subscription_belongs_to_its_creator(city: Broker, issuer: LocalIssuer
                                                     ) -> None:
    await grant(city, "authenticated", {Action.READ, Action.SUBSCRIBE})
    sub = {"type": "Subscription", "entities": [{"type": "Park"}],
           "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}}}
    async with city.client(token=issuer.token("mio")) as mio:
        r = await mio.post("/ngsi-ld/v1/subscriptions", json=sub)
        assert r.status_code == 201, r.text
        location = r.headers["Location"]
        assert (await mio.get(location)).status_code == 200
        assert len((await mio.get("/ngsi-ld/v1/subscriptions")).json()) == 1
    async with city.client(token=issuer.token("ren")) as ren:
        assert (await ren.get(location)).status_code == 404
        assert (await ren.get("/ngsi-ld/v1/subscriptions")).json() == []
        assert (await ren.delete(location)).status_code == 404
        assert (await ren.patch(location, json={"throttling": 5})).status_code == 404
    async with city.client() as anon:
        assert (await anon.post("/ngsi-ld/v1/subscriptions", json=sub)).status_code == 401
    async with city.client(key=await key(city, Role.TENANT_ADMIN)) as admin:
        assert len((await admin.get("/ngsi-ld/v1/subscriptions")).json()) == 1
        assert (await admin.delete(location)).status_code == 204


# -- platform endpoints and the audit log ---------------------------------------------------

async def test_operations_endpoints_need_a_platform_admin(city: Broker) -> None:
    async with city.client() as anon:
        assert (await anon.get("/health")).status_code == 200
        assert (await anon.get("/admin/dead-letters")).status_code == 401
        assert (await anon.get("/metrics")).status_code == 401
    async with city.client(key=await key(city, Role.TENANT_ADMIN)) as tenant_admin:
        assert (await tenant_admin.get("/admin/dead-letters")).status_code == 403
    async with city.client(key=await key(city, Role.PLATFORM_ADMIN, tenant="*")) as admin:
        assert (await admin.get("/admin/dead-letters")).status_code == 200
        assert (await admin.get("/metrics")).status_code == 200


async def test_writes_and_denials_are_audited(city: Broker) -> None:
    from urbanos.storage.access import AuditFilter

    stored, token = await city.services.access.create_key(OPEN, "", Role.WRITER, "w")
    async with city.client(key=token) as w:
        r = await w.post(E, json=park(1), headers={"X-Request-Id": "req-1"})
        assert r.status_code == 201 and r.headers["X-Request-Id"] == "req-1"
        await w.post("/ngsi-ld/v1/entityOperations/upsert", json=[park(2), building(2)])
    reader, rtoken = await city.services.access.create_key(OPEN, "", Role.READER, "r")
    async with city.client(key=rtoken) as r_:
        assert (await r_.delete(E + "/urn:ngsi-ld:Park:1")).status_code == 403
    records = await city.services.access.audit(AuditFilter(tenant=""))
    ok = [r for r in records if r.outcome == "ok"]
    denied = [r for r in records if r.outcome == "denied"]
    created = next(r for r in ok if r.entity_ids == ("urn:ngsi-ld:Park:1",))
    assert created.principal == f"apikey:{stored.id}" and created.request_id == "req-1"
    assert created.operation == "create_entity"
    batch = next(r for r in ok if "urn:ngsi-ld:Park:2" in r.entity_ids)
    assert set(batch.entity_ids) == {"urn:ngsi-ld:Park:2", "urn:ngsi-ld:Building:2"}
    assert any(r.principal == f"apikey:{reader.id}" and r.status == 403 for r in denied)
    assert len(city.services.access.store.notes) == 0  # every note reached its record


async def test_snapshots_show_each_reader_what_it_may_see(city: Broker, issuer: LocalIssuer
                                                         ) -> None:
    await seed(city)
    await grant(city, "subject:kai", {Action.READ}, types=(PARK,), hidden=(DEF + "secret",))
    snap = {"type": "Snapshot", "snapshotQueries": [{"type": "Query", "entities": [{"type": "Park"}]},
                                                    {"type": "Query", "entities": [{"type": "Building"}]}]}
    async with city.client(token=issuer.token("kai")) as kai:
        r = await kai.post("/ngsi-ld/v1/snapshots", json=snap)
        assert r.status_code == 201, r.text
        frozen = {"NGSILD-Snapshot": r.headers["Location"].rsplit("/", 1)[1]}
        r = await kai.get(E + "/urn:ngsi-ld:Park:1", headers=frozen)
        assert r.status_code == 200 and "secret" not in r.json()
        assert (await kai.get(E + "/urn:ngsi-ld:Building:1", headers=frozen)).status_code == 404
        r = await kai.get(E, params={"type": "Park,Building"}, headers=frozen)
        assert sorted(e["id"] for e in r.json()) == ["urn:ngsi-ld:Park:1", "urn:ngsi-ld:Park:2"]
        assert (await kai.delete(r.request.url.copy_with(
            path="/ngsi-ld/v1/snapshots/" + frozen["NGSILD-Snapshot"],
            params=None))).status_code == 403
    async with city.client(token=issuer.token("nobody")) as nobody:
        assert (await nobody.post("/ngsi-ld/v1/snapshots", json=snap)).status_code == 403


async def test_a_tenant_identity_provider_cannot_make_platform_admins(
    city: Broker, issuer: LocalIssuer
) -> None:
    from urbanos.services.access import Issuer

    with local_issuer() as kobe_idp:
        await city.services.access.put_issuer(OPEN, Issuer("kobe", kobe_idp.url, AUD))
        boss = kobe_idp.token("boss", roles=["platformAdmin", "tenantAdmin"])
        async with city.client(token=boss, tenant="kobe") as kobe:
            assert (await kobe.post(E, json=park(1))).status_code == 201  # its own tenant
            assert (await kobe.get("/admin/dead-letters")).status_code == 403
            assert (await kobe.get("/metrics")).status_code == 403
        async with city.client(token=boss) as elsewhere:
            assert (await elsewhere.get(E, params={"type": "Park"})).status_code == 401


async def test_refused_entities_of_a_batch_are_audited(city: Broker, issuer: LocalIssuer
                                                      ) -> None:
    from urbanos.storage.access import AuditFilter

    await grant(city, "subject:rin", {Action.READ, Action.WRITE}, types=(PARK,))
    async with city.client(token=issuer.token("rin")) as rin:
        r = await rin.post("/ngsi-ld/v1/entityOperations/create", json=[park(1), building(1)])
        assert r.status_code == 207
        sub = {"type": "Subscription", "entities": [{"type": "Park"}],
               "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}}}
        assert (await rin.post("/ngsi-ld/v1/subscriptions", json=sub)).status_code == 403
    records = await city.services.access.audit(AuditFilter(principal=f"{issuer.url}#rin"))
    seen = {(r.outcome, r.status, r.entity_ids) for r in records}
    assert ("ok", 0, ("urn:ngsi-ld:Park:1",)) in seen
    assert ("denied", 403, ("urn:ngsi-ld:Building:1",)) in seen
    assert any(r.outcome == "denied" and r.operation == "create_subscription"
               for r in records)


async def test_a_linked_query_cannot_test_what_the_reader_may_not_see(city: Broker) -> None:
    near = {"type": "Relationship", "object": "urn:ngsi-ld:Park:2"}
    async with city.client(key=await key(city, Role.WRITER)) as w:
        for doc in (park(1, near=near), park(2)):
            assert (await w.post(E, json=doc)).status_code == 201
    await grant(city, "public", {Action.READ}, types=(PARK,), hidden=(DEF + "secret",))
    asked = {"type": "Park", "q": "near{secret}==2", "join": "inline"}
    async with city.client(key=await key(city, Role.READER)) as reader:
        [found] = (await reader.get(E, params=asked)).json()
        assert found["near"]["entity"]["secret"]["value"] == 2
    async with city.client() as anon:
        assert (await anon.get(E, params=asked)).json() == []
        r = await anon.get(E, params={"type": "Park", "q": "near{name}==\"park 2\"",
                                      "join": "inline"})
        [found] = r.json()
        assert "secret" not in found["near"]["entity"] and "name" in found["near"]["entity"]


async def test_the_context_registry_is_changed_by_writers_and_served_to_anyone(
    city: Broker,
) -> None:
    body = {"@context": {"Lamp": "https://city.example/Lamp"}}
    ctx = "/ngsi-ld/v1/jsonldContexts"
    async with city.client() as anon:
        assert (await anon.post(ctx, json=body)).status_code == 401
    async with city.client(key=await key(city, Role.READER)) as reader:
        assert (await reader.post(ctx, json=body)).status_code == 403
    async with city.client(key=await key(city, Role.WRITER)) as writer:
        r = await writer.post(ctx, json=body)
        assert r.status_code == 201
        location = r.headers["Location"]
    async with city.client() as anon:  # other brokers fetch it by its URL, unauthenticated
        r = await anon.get(location)
        assert r.status_code == 200 and r.json() == body
        assert (await anon.delete(location)).status_code == 401
    async with city.client(key=await key(city, Role.READER)) as reader:
        assert (await reader.delete(location)).status_code == 403


async def test_a_flood_of_bad_credentials_is_limited_per_address(
    store_url: str, issuer: LocalIssuer
) -> None:
    from urbanos.storage.access import AuditFilter

    settings = secured_settings(store_url, issuer, rate_limit="default=100,anonymous=0.01,burst=2")
    async with broker(settings) as b:
        async with b.client(token="not.a.token") as forger:
            answers = [(await forger.get(E, params={"type": "Park"})).status_code
                       for _ in range(5)]
        assert answers == [401, 401, 429, 429, 429]
        records = await b.services.access.audit(AuditFilter(principal="unverified"))
        assert len(records) == 2  # the refused ones; the flood beyond is not written
        async with b.client(key=await key(b, Role.READER)) as reader:  # others go on
            assert (await reader.get(E, params={"type": "Park"})).status_code in (200, 404)
