"""/csourceRegistrations through the API on every store: register, read, query, update,
delete, and the errors of bad registrations (clauses 5.9, 5.10)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

R = "csourceRegistrations"
#: every registration (an unrestricted query is too wide, clause 5.10.2.4)
ALL = {"type": "*"}
CTX = {"@context": {"WaterLevel": "https://data.example/WaterLevel",
                    "height": "https://data.example/height"}}


def registration(rid: str = "urn:ngsi-ld:ContextSourceRegistration:uni", **more: Any
                 ) -> dict[str, Any]:
    return {"id": rid, "type": "ContextSourceRegistration",
            "information": [{"entities": [{"type": "WaterLevelObserved"}],
                             "propertyNames": ["waterLevel"]}],
            "endpoint": "http://university.example:1026", **more}


async def register(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> str:
    r = await client.post(R, json=body, headers=headers)
    assert r.status_code == 201, r.text
    assert r.content == b""
    return str(r.headers["Location"])


async def test_register_retrieve_update_delete(client: httpx.AsyncClient) -> None:
    location = await register(client, registration(registrationName="uni gauges"))
    assert location == f"/ngsi-ld/v1/{R}/urn:ngsi-ld:ContextSourceRegistration:uni"
    r = await client.get(location.removeprefix("/ngsi-ld/v1/"))
    assert r.status_code == 200
    body = r.json()
    assert body["id"] == "urn:ngsi-ld:ContextSourceRegistration:uni"
    assert body["type"] == "ContextSourceRegistration"
    assert body["information"] == [{"entities": [{"type": "WaterLevelObserved"}],
                                    "propertyNames": ["waterLevel"]}]
    assert body["endpoint"] == "http://university.example:1026"
    assert body["registrationName"] == "uni gauges"
    assert "createdAt" not in body
    r = await client.get(f"{R}/{body['id']}", params={"options": "sysAttrs"})
    assert "createdAt" in r.json() and "modifiedAt" in r.json()

    r = await client.patch(f"{R}/{body['id']}", json={"registrationName": "renamed"})
    assert r.status_code == 204
    assert (await client.get(f"{R}/{body['id']}")).json()["registrationName"] == "renamed"

    assert (await client.delete(f"{R}/{body['id']}")).status_code == 204
    r = await client.get(f"{R}/{body['id']}")
    assert r.status_code == 404 and r.json()["type"].endswith("ResourceNotFound")
    assert (await client.delete(f"{R}/{body['id']}")).status_code == 404
    assert (await client.patch(f"{R}/{body['id']}", json={"registrationName": "x"})
            ).status_code == 404


async def test_a_generated_id_and_a_duplicate(client: httpx.AsyncClient) -> None:
    body = registration()
    del body["id"]
    location = await register(client, body)
    assert location.startswith(f"/ngsi-ld/v1/{R}/urn:")
    await register(client, registration())
    r = await client.post(R, json=registration())
    assert r.status_code == 409 and r.json()["type"].endswith("AlreadyExists")


async def test_names_follow_the_callers_context(client: httpx.AsyncClient) -> None:
    body = registration()
    body["information"] = [{"entities": [{"type": "WaterLevel"}], "propertyNames": ["height"]}]
    body["@context"] = CTX["@context"]
    r = await client.post(R, json=body, headers={"Content-Type": "application/ld+json"})
    assert r.status_code == 201, r.text
    plain = (await client.get(f"{R}/{body['id']}")).json()  # core context: full IRIs
    assert plain["information"][0]["entities"][0]["type"] == "https://data.example/WaterLevel"
    assert plain["information"][0]["propertyNames"] == ["https://data.example/height"]
    found = (await client.get(R, params={"type": "https://data.example/WaterLevel"})).json()
    assert [f["id"] for f in found] == [body["id"]]


async def test_query_by_type_id_and_attrs_with_paging(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await register(client, registration(f"urn:ngsi-ld:ContextSourceRegistration:{n}"))
    other = registration("urn:ngsi-ld:ContextSourceRegistration:lamps")
    other["information"] = [{"entities": [{"id": "urn:ngsi-ld:Lamp:1", "type": "Lamp"}]}]
    await register(client, other)
    r = await client.get(R, params={"type": "WaterLevelObserved", "count": "true",
                                    "limit": "2"})
    assert r.status_code == 200
    assert r.headers["NGSILD-Results-Count"] == "3"
    assert [x["id"] for x in r.json()] == [f"urn:ngsi-ld:ContextSourceRegistration:{n}"
                                          for n in (0, 1)]
    assert 'rel="next"' in r.headers["Link"]
    r = await client.get(R, params={"type": "WaterLevelObserved", "attrs": "waterLevel"})
    assert len(r.json()) == 3
    r = await client.get(R, params={"type": "WaterLevelObserved", "attrs": "speed"})
    assert r.json() == []
    r = await client.get(R, params={"id": "urn:ngsi-ld:Lamp:1", "type": "Lamp"})
    assert [x["id"] for x in r.json()] == ["urn:ngsi-ld:ContextSourceRegistration:lamps"]
    r = await client.get(R, params={"id": "urn:ngsi-ld:Lamp:2", "type": "Lamp"})
    assert r.json() == []  # registered for another id of that type
    r = await client.get(R, params={"type": "Lamp", "attrs": "anything"})
    assert len(r.json()) == 1  # no names registered: every attribute of the entities
    r = await client.get(R, params={"type": "*", "count": "true"})
    assert r.headers["NGSILD-Results-Count"] == "4"


async def test_tenants_do_not_see_each_others_registrations(client: httpx.AsyncClient) -> None:
    await register(client, registration(), **{"NGSILD-Tenant": "sendai"})
    r = await client.get(R, params=ALL, headers={"NGSILD-Tenant": "sendai"})
    assert len(r.json()) == 1
    r = await client.get(f"{R}/urn:ngsi-ld:ContextSourceRegistration:uni")
    assert r.status_code == 404


@pytest.mark.parametrize("change", [
    {"endpoint": "not a url"},
    {"endpoint": "ftp://university.example/"},
    {"endpoint": "/relative"},
    {"mode": "sideways"},
    {"operations": ["flyAway"]},
    {"information": []},
    {"information": "all"},
    {"information": [{}]},
    {"type": "Registration"},
    {"id": "not a uri"},
    {"expiresAt": "2000-01-01T00:00:00Z"},
    {"timesSent": 5},
])
async def test_bad_registrations_are_400_and_store_nothing(
    client: httpx.AsyncClient, change: dict[str, Any]
) -> None:
    r = await client.post(R, json=registration() | change)
    assert r.status_code == 400, (change, r.text)
    assert r.json()["type"].endswith(("BadRequestData", "InvalidRequest"))
    assert (await client.get(R, params=ALL)).json() == []


async def test_a_bad_update_changes_nothing(client: httpx.AsyncClient) -> None:
    await register(client, registration())
    before = (await client.get(f"{R}/urn:ngsi-ld:ContextSourceRegistration:uni")).json()
    for fragment in ({"endpoint": "nope"}, {"mode": "sideways"}, {"information": []}):
        r = await client.patch(f"{R}/urn:ngsi-ld:ContextSourceRegistration:uni",
                               json=fragment)
        assert r.status_code == 400, (fragment, r.text)
    after = (await client.get(f"{R}/urn:ngsi-ld:ContextSourceRegistration:uni")).json()
    assert after == before


async def test_bad_paths_and_parameters(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{R}/not%20a%20uri")).status_code == 400
    assert (await client.get(R, params={"unknown": "1"})).status_code == 400
    assert (await client.get(R, params={"options": "keyValues"})).status_code == 400
    assert (await client.post(R, content=b"{", headers={"Content-Type": "application/json"})
            ).status_code == 400


async def test_a_nul_character_is_kept_or_refused_never_a_server_error(
    client: httpx.AsyncClient, store_url: str
) -> None:
    r = await client.post(R, json=registration(registrationName="before\u0000after"))
    if store_url.startswith("postgresql"):  # PostgreSQL text cannot hold U+0000
        assert r.status_code == 400 and r.json()["type"].endswith("BadRequestData"), r.text
        assert (await client.get(R, params=ALL)).json() == []
    else:
        assert r.status_code == 201, r.text
    await register(client, registration("urn:ngsi-ld:ContextSourceRegistration:next"))


async def test_an_exclusive_registration_is_not_overlapped(client: httpx.AsyncClient) -> None:
    def exclusive(rid: str, mode: str = "exclusive") -> dict[str, Any]:
        return registration(rid, mode=mode, information=[{
            "entities": [{"id": "urn:ngsi-ld:WaterLevelObserved:1",
                          "type": "WaterLevelObserved"}],
            "propertyNames": ["waterLevel"]}])

    await register(client, exclusive("urn:ngsi-ld:ContextSourceRegistration:a"))
    r = await client.post(R, json=exclusive("urn:ngsi-ld:ContextSourceRegistration:b"))
    assert r.status_code == 409, r.text
    r = await client.post(R, json=exclusive("urn:ngsi-ld:ContextSourceRegistration:c",
                                            "redirect"))
    assert r.status_code == 409
    bad = exclusive("urn:ngsi-ld:ContextSourceRegistration:d")
    bad["information"][0]["entities"][0] = {"idPattern": ".*", "type": "WaterLevelObserved"}
    assert (await client.post(R, json=bad)).status_code == 400  # no idPattern when exclusive
    assert [x["id"] for x in (await client.get(R, params=ALL)).json()] == [
        "urn:ngsi-ld:ContextSourceRegistration:a"]


async def test_an_endpoint_is_checked_as_the_broker_will_call_it(
    client: httpx.AsyncClient
) -> None:
    for endpoint in ("http://169.254.169.254/latest", "mqtt://broker.example:1883"):
        r = await client.post(R, json=registration(endpoint=endpoint))
        assert r.status_code == 400, (endpoint, r.text)
    assert (await client.get(R, params=ALL)).json() == []


async def test_an_unrestricted_query_is_too_wide(client: httpx.AsyncClient) -> None:
    await register(client, registration())
    for params in ({}, {"count": "true"}, {"limit": "5"}, {"options": "sysAttrs"}):
        r = await client.get(R, params=params)
        assert r.status_code == 400, params
        problem = r.json()
        assert problem["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
        assert "too wide" in problem["title"] + problem.get("detail", "")
    assert len((await client.get(R, params=ALL)).json()) == 1


async def test_query_by_csf_scope_geo_and_time(client: httpx.AsyncClient) -> None:
    inside = {"type": "Point", "coordinates": [130.76, 32.21]}
    await register(client, registration(
        "urn:ngsi-ld:ContextSourceRegistration:kuma", scope="/Kumamoto/Hitoyoshi",
        location=inside, operator="river office", information=[
            {"entities": [{"type": "WaterLevelObserved"}]}]))
    await register(client, registration(
        "urn:ngsi-ld:ContextSourceRegistration:tokyo", scope="/Tokyo",
        location={"type": "Point", "coordinates": [139.69, 35.69]}))
    await register(client, registration(
        "urn:ngsi-ld:ContextSourceRegistration:archive",
        observationInterval={"startAt": "2020-01-01T00:00:00Z",
                             "endAt": "2021-01-01T00:00:00Z"}))

    async def ids(**params: str) -> list[str]:
        r = await client.get(R, params={"type": "WaterLevelObserved", **params})
        assert r.status_code == 200, (params, r.text)
        return [x["id"].rsplit(":", 1)[1] for x in r.json()]

    assert await ids() == ["kuma", "tokyo"]  # no temporal query: latest information only
    assert await ids(csf='operator=="river office"') == ["kuma"]
    assert await ids(csf='endpoint=="http://university.example:1026";scope=="/Tokyo"') == [
        "tokyo"]
    assert await ids(scopeQ="/Kumamoto/#") == ["kuma"]
    assert await ids(georel="near;maxDistance==2000", geometry="Point",
                     coordinates="[130.765,32.21]") == ["kuma"]
    assert await ids(georel="within", geometry="Polygon", geoproperty="location",
                     coordinates="[[[130,32],[131,32],[131,33],[130,33],[130,32]]]") == ["kuma"]
    assert await ids(timerel="before", timeAt="2020-06-01T00:00:00Z") == ["archive"]
    assert await ids(timerel="after", timeAt="2020-06-01T00:00:00Z",
                     timeproperty="createdAt") == []  # no managementInterval
    # q names entity attributes: those sources registering other names are left out
    assert await ids(q="waterLevel>3.0") == ["kuma", "tokyo"]
    assert await ids(q="speed>3.0") == ["kuma"]


@pytest.mark.parametrize("params", [
    {"id": "invalidUri"}, {"q": "(invalidQuery"}, {"georel": "within"},
    {"timerel": "before"}, {"type": "T", "csf": "endpoint=="}, {"type": "T", "scopeQ": "//"},
    {"type": "T", "timerel": "after", "timeAt": "2020-01-01T00:00:00Z",
     "timeproperty": "observationInterval"},
    {"type": "T", "geoproperty": "location"},
])
async def test_invalid_filters_are_bad_request_data(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    r = await client.get(R, params=params)
    assert r.status_code == 400, (params, r.text)
    problem = r.json()
    assert problem["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    assert problem["title"]


async def test_paging_links_keep_the_callers_query(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await register(client, registration(f"urn:ngsi-ld:ContextSourceRegistration:{n}"))
    r = await client.get(f"{R}?type=WaterLevelObserved&limit=1&offset=1&attrs=waterLevel,height")
    links = [link.strip() for link in r.headers["Link"].split(",")
             if "json-ld#context" not in link]
    assert links[-2:] == [
        f'</ngsi-ld/v1/{R}?type=WaterLevelObserved&limit=1&offset=0&attrs=waterLevel%2Cheight>;'
        ' rel="prev"; type="application/ld+json"',
        f'</ngsi-ld/v1/{R}?type=WaterLevelObserved&limit=1&offset=2&attrs=waterLevel%2Cheight>;'
        ' rel="next"; type="application/ld+json"',
    ], links
    r = await client.get(f"{R}?offset=2&type=WaterLevelObserved")  # the default limit
    assert any("?offset=0&type=WaterLevelObserved&limit=" in link
               for link in r.headers["Link"].split(","))


async def test_redirect_or_exclusive_over_local_data_is_a_conflict(
        client: httpx.AsyncClient) -> None:
    """Clause 5.9.2.4: a redirect registration naming an existing local entity, or an
    exclusive one naming an attribute it has, is refused with 409 Conflict; what the local
    entity does not hold is registered."""
    eid = "urn:ngsi-ld:Building:local"
    r = await client.post("entities", json={
        "id": eid, "type": "Building", "name": {"type": "Property", "value": "Hall"}})
    assert r.status_code == 201, r.text
    on_local = [{"entities": [{"type": "Building", "id": eid}]}]

    r = await client.post(R, json=registration(mode="redirect", information=on_local,
                                               operations=["retrieveOps"]))
    assert r.status_code == 409, r.text
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/Conflict"

    exclusive = [{"entities": [{"type": "Building", "id": eid}], "propertyNames": ["name"]}]
    r = await client.post(R, json=registration(mode="exclusive", information=exclusive,
                                               operations=["retrieveOps"]))
    assert r.status_code == 409, r.text
    assert (await client.get(R, params=ALL)).json() == []

    # an attribute the entity lacks, another type, or an entity that does not exist: fine
    other = [{"entities": [{"type": "Building", "id": eid}], "propertyNames": ["height"]}]
    await register(client, registration("urn:ngsi-ld:ContextSourceRegistration:ex",
                                        mode="exclusive", information=other,
                                        operations=["retrieveOps"]))
    elsewhere = [{"entities": [{"type": "Building", "id": "urn:ngsi-ld:Building:remote"}]}]
    await register(client, registration("urn:ngsi-ld:ContextSourceRegistration:re",
                                        mode="redirect", information=elsewhere,
                                        operations=["retrieveOps"]))
    # an inclusive registration over the local entity is not refused
    await register(client, registration("urn:ngsi-ld:ContextSourceRegistration:in",
                                        information=on_local))
