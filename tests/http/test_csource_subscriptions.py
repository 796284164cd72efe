"""/csourceSubscriptions through the API on every store: create, retrieve, query, update,
delete, and the errors of bad subscriptions (clauses 5.11.2 - 5.11.6)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.http.access_harness import Broker, LocalIssuer, broker, local_issuer, secured_settings
from urbanos.core.policy import OPEN, Action, Assignee, Grant, Role, Target

CS = "csourceSubscriptions"
LD = "application/ld+json"
CTX = {"Building": "https://data.example/Building", "name": "https://data.example/name"}


def csub(sid: str = "urn:ngsi-ld:Subscription:cs1", **more: Any) -> dict[str, Any]:
    return {"id": sid, "type": "Subscription", "entities": [{"type": "Building"}],
            "notification": {"format": "keyValues",
                             "endpoint": {"uri": "http://127.0.0.1:9/notify",
                                          "accept": "application/json"}},
            **more}


async def create(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> str:
    r = await client.post(CS, json=body, headers=headers)
    assert r.status_code == 201, r.text
    assert r.content == b""
    return str(r.headers["Location"])


async def test_create_retrieve_update_delete(client: httpx.AsyncClient) -> None:
    location = await create(client, csub())
    assert location == f"/ngsi-ld/v1/{CS}/urn:ngsi-ld:Subscription:cs1"
    r = await client.get(location.removeprefix("/ngsi-ld/v1/"))
    assert r.status_code == 200
    assert r.json() == {
        "id": "urn:ngsi-ld:Subscription:cs1", "type": "Subscription",
        "entities": [{"type": "Building"}],
        "notification": {"format": "keyValues",
                         "endpoint": {"uri": "http://127.0.0.1:9/notify",
                                      "accept": "application/json"}},
        "status": "active",
    }
    r = await client.patch(f"{CS}/urn:ngsi-ld:Subscription:cs1",
                           json={"isActive": False, "watchedAttributes": ["name"]})
    assert r.status_code == 204 and r.content == b""
    body = (await client.get(f"{CS}/urn:ngsi-ld:Subscription:cs1")).json()
    assert body["isActive"] is False and body["status"] == "paused"
    assert body["watchedAttributes"] == ["name"]

    assert (await client.delete(f"{CS}/urn:ngsi-ld:Subscription:cs1")).status_code == 204
    r = await client.get(f"{CS}/urn:ngsi-ld:Subscription:cs1")
    assert r.status_code == 404 and r.json()["type"].endswith("ResourceNotFound")
    assert (await client.delete(f"{CS}/urn:ngsi-ld:Subscription:cs1")).status_code == 404
    r = await client.patch(f"{CS}/urn:ngsi-ld:Subscription:cs1", json={"isActive": True})
    assert r.status_code == 404


async def test_a_generated_id_a_duplicate_and_the_other_kind(
    client: httpx.AsyncClient,
) -> None:
    body = csub()
    del body["id"]
    location = await create(client, body)
    assert location.startswith(f"/ngsi-ld/v1/{CS}/urn:ngsi-ld:Subscription:")
    await create(client, csub())
    r = await client.post(CS, json=csub())
    assert r.status_code == 409 and r.json()["type"].endswith("AlreadyExists")
    # entity subscriptions and csource subscriptions are two collections
    assert (await client.get("subscriptions/urn:ngsi-ld:Subscription:cs1")).status_code == 404
    assert (await client.get("subscriptions")).json() == []
    assert (await client.delete("subscriptions/urn:ngsi-ld:Subscription:cs1")
            ).status_code == 404
    entity_sub = csub("urn:ngsi-ld:Subscription:entities")
    r = await client.post("subscriptions", json=entity_sub)
    assert r.status_code == 201, r.text
    ids = [s["id"] for s in (await client.get(CS)).json()]
    assert "urn:ngsi-ld:Subscription:entities" not in ids and len(ids) == 2
    assert (await client.get(f"{CS}/urn:ngsi-ld:Subscription:entities")).status_code == 404


async def test_names_follow_the_callers_context(client: httpx.AsyncClient) -> None:
    await create(client, {**csub(watchedAttributes=["name"]), "@context": CTX},
                 **{"Content-Type": LD})
    plain = (await client.get(f"{CS}/urn:ngsi-ld:Subscription:cs1")).json()
    assert plain["entities"] == [{"type": "https://data.example/Building"}]
    assert plain["watchedAttributes"] == ["https://data.example/name"]
    r = await client.get(f"{CS}/urn:ngsi-ld:Subscription:cs1", headers={"Accept": LD})
    shown = r.json()
    assert r.headers["Content-Type"] == LD and "@context" in shown


async def test_invalid_subscriptions_are_400(client: httpx.AsyncClient) -> None:
    bad: list[dict[str, Any]] = [
        {k: v for k, v in csub().items() if k != "notification"},
        csub(type="RandomType"),
        csub(q="speed>"),
        csub(watchedAttributes=[]),
        csub(expiresAt="2018-08-01T22:07:00Z"),
        csub(temporalQ={"timerel": "later", "timeAt": "2020-06-01T22:07:00Z"}),
        csub(timeInterval=10, throttling=5),
    ]
    for body in bad:
        r = await client.post(CS, json=body)
        assert r.status_code == 400, body
        assert r.json()["type"].endswith("BadRequestData")
    await create(client, csub())
    for fragment in ({"type": None, "notification": {"format": "keyValues"}},
                     {"notification": {"format": "keyValues"}}):
        r = await client.patch(f"{CS}/urn:ngsi-ld:Subscription:cs1", json=fragment)
        assert r.status_code == 400 and r.json()["type"].endswith("BadRequestData")
    r = await client.patch(f"{CS}/urn:ngsi-ld:Subscription:cs1", content=b'{"a":,}',
                           headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["type"].endswith("InvalidRequest")
    for call in (client.get, client.delete):
        r = await call(f"{CS}/invalidUri")
        assert r.status_code == 400 and r.json()["type"].endswith("BadRequestData")
    r = await client.patch(f"{CS}/invalidUri", json={"isActive": False})
    assert r.status_code == 400


async def test_query_pages_counts_and_links(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await create(client, csub(f"urn:ngsi-ld:Subscription:q{n}"))
    r = await client.get(CS, params={"limit": 2, "offset": 0, "count": "true"})
    assert r.status_code == 200
    assert [s["id"] for s in r.json()] == ["urn:ngsi-ld:Subscription:q0",
                                          "urn:ngsi-ld:Subscription:q1"]
    assert r.headers["NGSILD-Results-Count"] == "3"
    assert 'rel="next"' in r.headers["Link"]
    r = await client.get(CS, params={"limit": 2, "offset": 2})
    assert [s["id"] for s in r.json()] == ["urn:ngsi-ld:Subscription:q2"]
    assert 'rel="prev"' in r.headers["Link"]
    for params in ({"limit": -5, "offset": 2}, {"limit": 2, "offset": -3},
                   {"limit": 0, "offset": -1}):
        r = await client.get(CS, params=params)
        assert r.status_code == 400 and r.json()["type"].endswith("BadRequestData")
    r = await client.get(CS, headers={"Accept": "text/csv"})
    assert r.status_code == 406


async def test_tenants_are_apart(client: httpx.AsyncClient) -> None:
    await create(client, csub(), **{"NGSILD-Tenant": "gent"})
    assert (await client.get(f"{CS}/urn:ngsi-ld:Subscription:cs1")).status_code == 404
    r = await client.get(f"{CS}/urn:ngsi-ld:Subscription:cs1",
                         headers={"NGSILD-Tenant": "gent"})
    assert r.status_code == 200


# -- with access control ------------------------------------------------------------------


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with local_issuer() as it:
        yield it


@pytest.fixture
async def city(store_url: str, issuer: LocalIssuer) -> AsyncIterator[Broker]:
    async with broker(secured_settings(store_url, issuer)) as b:
        yield b


async def test_a_csource_subscription_belongs_to_its_creator(
    city: Broker, issuer: LocalIssuer,
) -> None:
    path = f"/ngsi-ld/v1/{CS}"
    async with city.client(token=issuer.token("mio")) as mio:
        r = await mio.post(path, json=csub())
        assert r.status_code == 403  # no right to subscribe yet
    g = Grant(id="urn:ngsi-ld:Permission:0", tenant="", assignee=Assignee.parse("authenticated"),
              actions=frozenset({Action.READ, Action.SUBSCRIBE}), target=Target())
    await city.services.access.add_grant(OPEN, g)
    async with city.client(token=issuer.token("mio")) as mio:
        r = await mio.post(path, json=csub())
        assert r.status_code == 201, r.text
        location = r.headers["Location"]
        assert (await mio.get(location)).status_code == 200
        assert len((await mio.get(path)).json()) == 1
    async with city.client(token=issuer.token("ren")) as ren:
        assert (await ren.get(location)).status_code == 404
        assert (await ren.get(path)).json() == []
        assert (await ren.patch(location, json={"throttling": 5})).status_code == 404
        assert (await ren.delete(location)).status_code == 404
    async with city.client() as anon:
        assert (await anon.post(path, json=csub("urn:x:anon"))).status_code == 401
    _, token = await city.services.access.create_key(OPEN, "", Role.TENANT_ADMIN, "admin key")
    async with city.client(key=token) as admin:
        assert len((await admin.get(path)).json()) == 1
        assert (await admin.delete(location)).status_code == 204
