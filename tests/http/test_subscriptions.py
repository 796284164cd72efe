"""/subscriptions over HTTP (clauses 5.8.1 - 5.8.5, binding 6.10 - 6.11)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

BAD = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
SID = "urn:ngsi-ld:Subscription:bridge-lamps"
CTX = {"River": "https://ex.org/River", "level": "https://ex.org/level"}
D = "https://uri.etsi.org/ngsi-ld/default-context/"


def sub(**members: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": SID,
        "type": "Subscription",
        "entities": [{"type": "River"}],
        "watchedAttributes": ["level"],
        "q": "level>3.4",
        "notification": {"format": "keyValues", "attributes": ["level"],
                         "endpoint": {"uri": "http://lamps.example/notify",
                                      "accept": "application/json"}},
    }
    body.update(members)
    return {k: v for k, v in body.items() if v is not None}


async def create(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await client.post("subscriptions", json=body, headers=headers)


async def test_create_retrieve_delete(client: httpx.AsyncClient) -> None:
    r = await create(client, {**sub(), "@context": CTX}, **{"Content-Type": "application/ld+json"})
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/ngsi-ld/v1/subscriptions/{SID}"
    r = await client.get(f"subscriptions/{SID}", headers={"Accept": "application/ld+json"})
    assert r.status_code == 200
    shown = r.json()
    assert shown["entities"] == [{"type": "https://ex.org/River"}]  # core @context only
    assert shown["status"] == "active"
    assert shown["notificationTrigger"] == ["attributeCreated", "attributeUpdated"]
    assert shown["jsonldContext"].startswith("http")
    assert "timesSent" not in shown["notification"]
    assert not any(k.startswith("_") for k in shown)
    r = await client.delete(f"subscriptions/{SID}")
    assert r.status_code == 204
    assert (await client.get(f"subscriptions/{SID}")).status_code == 404
    assert (await client.delete(f"subscriptions/{SID}")).status_code == 404


async def test_names_follow_the_callers_context(client: httpx.AsyncClient) -> None:
    assert (await create(client, sub())).status_code == 201
    shown = (await client.get(f"subscriptions/{SID}")).json()
    assert shown["entities"] == [{"type": "River"}]
    assert shown["watchedAttributes"] == ["level"]
    assert shown["q"] == "level>3.4"
    assert client.headers.get("link") is None


async def test_generated_id_and_duplicates(client: httpx.AsyncClient) -> None:
    r = await create(client, sub(id=None))
    assert r.status_code == 201
    assert r.headers["Location"].startswith("/ngsi-ld/v1/subscriptions/urn:ngsi-ld:Subscription:")
    assert (await create(client, sub())).status_code == 201
    r = await create(client, sub())
    assert r.status_code == 409
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/AlreadyExists"


@pytest.mark.parametrize(
    "body",
    [
        {},
        sub(type="Other"),
        sub(id="not a uri"),
        sub(entities=None, watchedAttributes=None),
        sub(entities=[{"id": "urn:x:1"}]),
        sub(entities=[{"type": "River", "color": "blue"}]),
        sub(unknownMember=1),
        sub(q="level>>"),
        sub(geoQ={"georel": "near", "geometry": "Point", "coordinates": [1, 2]}),
        sub(scopeQ="/a/("),
        sub(csf="(("),
        sub(watchedAttributes=None, timeInterval=5, throttling=5),
        sub(throttling=-30),
        sub(timeInterval=0),
        sub(expiresAt="2000-01-01T00:00:00Z"),
        sub(expiresAt="tomorrow"),
        sub(isActive="yes"),
        sub(notificationTrigger=["entityChanged"]),
        sub(notification=None),
        sub(notification={"format": "keyValues"}),
        sub(notification={"endpoint": {"uri": "ftp://x.example/n"}}),
        sub(notification={"endpoint": {"uri": "not a url"}}),
        sub(notification={"endpoint": {"uri": "http://x.example/n", "accept": "text/xml"}}),
        sub(notification={"endpoint": {"uri": "http://169.254.169.254/latest"}}),
        sub(notification={"endpoint": {"uri": "http://127.0.0.1:1026/ngsi-ld/v1/entities"}}),
        sub(notification={"format": "keyValues", "showChanges": True,
                          "endpoint": {"uri": "http://x.example/n"}}),
        sub(notification={"attributes": [], "endpoint": {"uri": "http://x.example/n"}}),
        sub(notification={"pick": ["id"], "omit": ["id"],
                          "endpoint": {"uri": "http://x.example/n"}}),
        sub(notification={"pick": ["id"], "attributes": ["level"],
                          "endpoint": {"uri": "http://x.example/n"}}),
        sub(notification={"endpoint": {"uri": "http://x.example/n", "receiverInfo": [
            {"key": "X-A", "value": "a\r\nInjected: 1"}]}}),
        sub(notification={"endpoint": {"uri": "http://x.example/n", "receiverInfo": [
            {"key": "X-A", "value": 42}]}}),
        sub(notification={"endpoint": {"uri": "mqtt://x.example/t", "notifierInfo": [
            {"key": "MQTT-QoS", "value": "3"}]}}),
        sub(jsonldContext="unknownContext"),
    ],
)
async def test_invalid_subscriptions(client: httpx.AsyncClient, body: Any) -> None:
    r = await create(client, body)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == BAD
    assert (await client.get("subscriptions")).json() == []


async def test_invalid_json_is_invalid_request(client: httpx.AsyncClient) -> None:
    r = await client.post("subscriptions", content=b"{,}",
                          headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest"


async def test_read_only_members_are_ignored(client: httpx.AsyncClient) -> None:
    body = sub(status="expired")
    body["notification"]["timesSent"] = 42
    assert (await create(client, body)).status_code == 201
    shown = (await client.get(f"subscriptions/{SID}")).json()
    assert shown["status"] == "active"
    assert "timesSent" not in shown["notification"]


async def test_mqtt_endpoint(client: httpx.AsyncClient) -> None:
    body = sub(notification={"endpoint": {
        "uri": "mqtt://broker.example:1883/city/lamps",
        "notifierInfo": [{"key": "MQTT-QoS", "value": "1"},
                         {"key": "MQTT-Version", "value": "mqtt3.1.1"}]}})
    assert (await create(client, body)).status_code == 201


async def test_query_pages_and_counts(client: httpx.AsyncClient) -> None:
    for n in range(3):
        assert (await create(client, sub(id=f"{SID}:{n}"))).status_code == 201
    r = await client.get("subscriptions", params={"limit": 1, "offset": 1, "count": "true"})
    assert r.status_code == 200
    assert [s["id"] for s in r.json()] == [f"{SID}:1"]
    assert r.headers["NGSILD-Results-Count"] == "3"
    links = r.headers["Link"]
    assert '</ngsi-ld/v1/subscriptions?limit=1&offset=0&count=true>; rel="prev"' in links
    assert '</ngsi-ld/v1/subscriptions?limit=1&offset=2&count=true>; rel="next"' in links
    r = await client.get("subscriptions", params={"limit": 0})
    assert r.status_code == 400


async def test_tenants_are_isolated(client: httpx.AsyncClient) -> None:
    assert (await create(client, sub(), **{"NGSILD-Tenant": "city"})).status_code == 201
    assert (await client.get(f"subscriptions/{SID}")).status_code == 404
    r = await client.get(f"subscriptions/{SID}", headers={"NGSILD-Tenant": "city"})
    assert r.status_code == 200
    assert (await create(client, sub())).status_code == 201  # the same id elsewhere


async def test_update(client: httpx.AsyncClient) -> None:
    assert (await create(client, sub())).status_code == 201
    fragment = {"type": "Subscription", "entities": [{"type": "Lake"}], "isActive": False,
                "q": None}
    r = await client.patch(f"subscriptions/{SID}", json=fragment)
    assert r.status_code == 204, r.text
    shown = (await client.get(f"subscriptions/{SID}")).json()
    assert shown["entities"] == [{"type": "Lake"}]
    assert shown["status"] == "paused" and "q" not in shown
    r = await client.patch(f"subscriptions/{SID}", json={"isActive": True,
                                                         "expiresAt": "2090-01-01T00:00:00Z"})
    assert r.status_code == 204
    assert (await client.get(f"subscriptions/{SID}")).json()["status"] == "active"


@pytest.mark.parametrize(
    "fragment",
    [
        {"notification": {"format": "keyValues"}},
        {"notification": None},
        {"notification": {"endpoint": None}},
        {"expiresAt": "2020-08-01T22:07:00Z"},
        {"entities": None, "watchedAttributes": None},
        {"type": "Entity"},
        {"color": "blue"},
        {},
    ],
)
async def test_invalid_update(client: httpx.AsyncClient, fragment: Any) -> None:
    assert (await create(client, sub())).status_code == 201
    r = await client.patch(f"subscriptions/{SID}", json=fragment)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == BAD


async def test_ids_in_paths(client: httpx.AsyncClient) -> None:
    for method in ("GET", "DELETE"):
        r = await client.request(method, "subscriptions/InvalidUri")
        assert r.status_code == 400 and r.json()["type"] == BAD
    r = await client.patch("subscriptions/InvalidUri", json={"isActive": True})
    assert r.status_code == 400
    assert (await client.patch(f"subscriptions/{SID}", json={"isActive": True})).status_code == 404
    assert (await client.delete("subscriptions/")).status_code == 405


async def test_version_preference_leaves_subscriptions_alone(client: httpx.AsyncClient) -> None:
    assert (await create(client, sub())).status_code == 201
    for prefer in ("ngsi-ld=1.0", "NGSI-LD=\"1.0\"", "respond-async, ngsi-ld=1.0;q=0.1"):
        r = await client.get(f"subscriptions/{SID}", headers={"Prefer": prefer})
        assert r.status_code == 200
        assert r.headers["Preference-Applied"] == "ngsi-ld=1.0"
    r = await client.get(f"subscriptions/{SID}", headers={"Prefer": "respond-async"})
    assert "Preference-Applied" not in r.headers


async def test_subscriptions_survive_a_restart(tmp_path: Any) -> None:
    from tests.conftest import _lifespan
    from urbanos.http.app import create_app
    from urbanos.settings import Settings

    settings = Settings(store=f"sqlite:///{tmp_path}/restart.db")
    for round_ in range(2):
        app = create_app(settings)
        async with _lifespan(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://broker/ngsi-ld/v1/"
        ) as client:
            if round_ == 0:
                assert (await create(client, sub())).status_code == 201
            else:
                r = await client.get(f"subscriptions/{SID}")
                assert r.status_code == 200 and r.json()["q"] == "level>3.4"
                inner: Any = app
                while not hasattr(inner, "state"):  # under the middlewares
                    inner = inner.app
                index = await inner.state.services.subscriptions._index("")
                assert SID in index.subs
