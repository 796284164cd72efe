"""Distributed writes through the API on every store (clauses 4.3.6.2, 4.3.6.3, 6.3.17,
6.3.18): a real HTTP context source receives what each registration mode forwards."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.http.access_harness import broker, local_issuer, secured_settings
from tests.http.context_source import ContextSource
from urbanos.core.policy import OPEN, Role

V = "urn:ngsi-ld:Vehicle:"
SPEED = "https://uri.etsi.org/ngsi-ld/default-context/speed"
CTX = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"


@pytest.fixture
def source() -> Iterator[ContextSource]:
    with ContextSource() as s:
        yield s


def vehicle(eid: str, **attrs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": eid, "type": "Vehicle"}
    for name, value in attrs.items():
        body[name] = {"type": "Property", "value": value}
    return body


async def register(client: httpx.AsyncClient, source: ContextSource, mode: str, *,
                   ids: list[str] | None = None, names: list[str] | None = None,
                   operations: list[str] | None = None, path: str = "",
                   **more: Any) -> str:
    entities = ([{"id": i, "type": "Vehicle"} for i in ids] if ids
                else [{"type": "Vehicle"}])
    info: dict[str, Any] = {"entities": entities}
    if names:
        info["propertyNames"] = names
    body = {"type": "ContextSourceRegistration", "information": [info],
            "endpoint": source.base + path, "mode": mode,
            "operations": operations or ["redirectionOps"], **more}
    r = await client.post("csourceRegistrations", json=body)
    assert r.status_code == 201, r.text
    return str(r.headers["Location"]).rsplit("/", 1)[-1]


async def local(client: httpx.AsyncClient, eid: str) -> httpx.Response:
    return await client.get(f"entities/{eid}", params={"local": "true"})


async def test_inclusive_create_is_done_here_and_at_the_source(
        client: httpx.AsyncClient, source: ContextSource) -> None:
    await register(client, source, "inclusive")
    r = await client.post("entities", json=vehicle(V + "1", speed=10))
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/ngsi-ld/v1/entities/{V}1"
    assert (await local(client, V + "1")).json()["speed"]["value"] == 10
    [sent] = source.on("POST", "/ngsi-ld/v1/entities")
    assert sent.json() == vehicle(V + "1", speed=10)
    assert sent.header("Content-Type") == "application/json"
    assert (sent.header("Via") or "").startswith("1.1 ")


async def test_local_true_is_not_forwarded(client: httpx.AsyncClient,
                                           source: ContextSource) -> None:
    await register(client, source, "inclusive")
    r = await client.post("entities", json=vehicle(V + "1", speed=10),
                          params={"local": "true"})
    assert r.status_code == 201
    r = await client.delete(f"entities/{V}1", params={"local": "true"})
    assert r.status_code == 204
    assert source.requests == []


async def test_exclusive_attributes_go_to_the_source_only(
        client: httpx.AsyncClient, source: ContextSource) -> None:
    await register(client, source, "exclusive", ids=[V + "1"], names=["speed"])
    r = await client.post("entities", json=vehicle(V + "1", speed=10, brand="x"))
    assert r.status_code == 201, r.text
    mine = (await local(client, V + "1")).json()
    assert "speed" not in mine and mine["brand"]["value"] == "x"
    [sent] = source.on("POST", "/ngsi-ld/v1/entities")
    assert sent.json() == vehicle(V + "1", speed=10)

    # an update of the exclusive attribute only is forwarded, nothing written here
    r = await client.patch(f"entities/{V}1/attrs", json={"speed": {"type": "Property",
                                                                    "value": 11}})
    assert r.status_code == 204, r.text
    [sent] = source.on("PATCH", f"/ngsi-ld/v1/entities/{V}1/attrs")
    assert sent.json() == {"speed": {"type": "Property", "value": 11}}
    assert "speed" not in (await local(client, V + "1")).json()

    # an append splits: brand here, speed there
    r = await client.post(f"entities/{V}1/attrs",
                          json={"speed": {"type": "Property", "value": 12},
                                "brand": {"type": "Property", "value": "y"}})
    assert r.status_code == 204, r.text
    [sent] = source.on("POST", f"/ngsi-ld/v1/entities/{V}1/attrs")
    assert sent.json() == {"speed": {"type": "Property", "value": 12}}
    assert (await local(client, V + "1")).json()["brand"]["value"] == "y"

    # deleting the exclusive attribute is forwarded only
    r = await client.delete(f"entities/{V}1/attrs/speed")
    assert r.status_code == 204, r.text
    assert len(source.on("DELETE", f"/ngsi-ld/v1/entities/{V}1/attrs/speed")) == 1

    # deleting the entity: here and there
    r = await client.delete(f"entities/{V}1")
    assert r.status_code == 204, r.text
    assert [r.path for r in source.on("DELETE")] == [
        f"/ngsi-ld/v1/entities/{V}1/attrs/speed", f"/ngsi-ld/v1/entities/{V}1"]
    assert (await local(client, V + "1")).status_code == 404


async def test_redirect_keeps_nothing_here(client: httpx.AsyncClient,
                                           source: ContextSource) -> None:
    source.answer("POST", "/ngsi-ld/v1/entities", 201)
    await register(client, source, "redirect", ids=[V + "1"])
    r = await client.post("entities", json=vehicle(V + "1", speed=10))
    assert r.status_code == 201, r.text
    assert (await local(client, V + "1")).status_code == 404
    r = await client.put(f"entities/{V}1", json=vehicle(V + "1", speed=3))
    assert r.status_code == 204, r.text
    [sent] = source.on("PUT", f"/ngsi-ld/v1/entities/{V}1")
    assert sent.json() == vehicle(V + "1", speed=3)
    r = await client.patch(f"entities/{V}1", json={"speed": {"type": "Property", "value": 4}})
    assert r.status_code == 204, r.text
    assert [r.path for r in source.on("PATCH")] == [f"/ngsi-ld/v1/entities/{V}1"]
    assert (await local(client, V + "1")).status_code == 404


async def test_a_source_that_fails_makes_a_207(client: httpx.AsyncClient,
                                               source: ContextSource) -> None:
    source.answer("POST", "/ngsi-ld/v1/entities", 409,
                  {"type": "https://uri.etsi.org/ngsi-ld/errors/AlreadyExists",
                   "title": "Already exists", "status": 409, "detail": "taken"})
    rid = await register(client, source, "inclusive")
    r = await client.post("entities", json=vehicle(V + "1", speed=10))
    assert r.status_code == 207, r.text
    body = r.json()
    assert body["success"] == [V + "1"]
    [error] = body["errors"]
    assert error["entityId"] == V + "1" and error["registrationId"] == rid
    assert error["error"]["status"] == 409 and error["error"]["detail"] == "taken"
    assert "409" in r.headers["NGSILD-Warning"]
    assert (await local(client, V + "1")).status_code == 200

    # both parts fail: still 207, two errors
    r = await client.post("entities", json=vehicle(V + "1", speed=10))
    assert r.status_code == 207
    assert [e["error"]["status"] for e in r.json()["errors"]] == [409, 409]
    assert r.json()["success"] == []


async def test_a_missing_local_entity_with_a_source_is_partial(
        client: httpx.AsyncClient, source: ContextSource) -> None:
    rid = await register(client, source, "inclusive", ids=[V + "1"])
    r = await client.delete(f"entities/{V}1")
    assert r.status_code == 207, r.text
    [error] = r.json()["errors"]
    assert error["error"]["status"] == 404 and "registrationId" not in error
    source.answer("DELETE", "/ngsi-ld/v1/entities/", 404)
    await client.post("entities", json=vehicle(V + "1", speed=1), params={"local": "true"})
    r = await client.delete(f"entities/{V}1")
    assert r.status_code == 207
    [error] = r.json()["errors"]
    assert error["registrationId"] == rid and error["error"]["status"] == 404
    assert r.headers["NGSILD-Warning"].startswith(f'299 {source.base} "')
    assert (await local(client, V + "1")).status_code == 404


async def test_an_operation_the_holder_does_not_take_is_a_conflict(
        client: httpx.AsyncClient, source: ContextSource) -> None:
    await register(client, source, "redirect", ids=[V + "1"], operations=["retrieveOps"])
    r = await client.post("entities", json=vehicle(V + "1", speed=10))
    assert r.status_code == 409, r.text
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/Conflict"
    assert source.requests == []
    assert (await local(client, V + "1")).status_code == 404
    # an inclusive source without the operation is simply not asked
    await register(client, source, "inclusive", ids=[V + "2"], operations=["retrieveOps"])
    assert (await client.post("entities", json=vehicle(V + "2"))).status_code == 201
    assert source.requests == []


async def test_a_request_that_came_back_is_a_loop(client: httpx.AsyncClient,
                                                  source: ContextSource) -> None:
    await register(client, source, "redirect", ids=[V + "1"])
    assert (await client.post("entities", json=vehicle(V + "1"))).status_code == 201
    via = source.requests[0].header("Via")
    assert via
    r = await client.delete(f"entities/{V}1", headers={"Via": via})
    assert r.status_code == 508, r.text
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/LoopDetected"
    assert len(source.requests) == 1
    # a Via of another broker is passed on, with this one added
    r = await client.delete(f"entities/{V}1", headers={"Via": "1.1 other"})
    assert r.status_code == 204
    assert source.requests[-1].header("Via") == f"1.1 other, {via}"


async def test_noOverwrite_partial_at_the_source_is_an_update_result(  # noqa: N802
        client: httpx.AsyncClient, source: ContextSource) -> None:
    rid = await register(client, source, "exclusive", ids=[V + "1"], names=["speed"])
    await client.post("entities", json=vehicle(V + "1", brand="x"), params={"local": "true"})
    source.answer("POST", f"/ngsi-ld/v1/entities/{V}1/attrs", 207,
                  {"updated": [], "notUpdated": [{"attributeName": "speed",
                                                  "reason": "exists"}]})
    r = await client.post(f"entities/{V}1/attrs", params={"options": "noOverwrite"},
                          json={"speed": {"type": "Property", "value": 1},
                                "brand": {"type": "Property", "value": "y"}})
    assert r.status_code == 207, r.text
    body = r.json()
    assert {"attributeName": "speed", "reason": "exists", "registrationId": rid} \
        in body["notUpdated"]
    assert any(n["attributeName"] == "brand" and "registrationId" not in n
               for n in body["notUpdated"])
    [sent] = source.on("POST", f"/ngsi-ld/v1/entities/{V}1/attrs")
    assert ("options", "noOverwrite") in sent.query


async def test_purge_is_forwarded_with_the_query(client: httpx.AsyncClient,
                                                 source: ContextSource) -> None:
    await register(client, source, "inclusive", operations=["purgeEntity"])
    await client.post("entities", json=vehicle(V + "1"), params={"local": "true"})
    r = await client.delete("entities", params={"type": "Vehicle"})
    assert r.status_code == 204, r.text
    [sent] = source.on("DELETE", "/ngsi-ld/v1/entities")
    assert sent.query == [("type", "Vehicle")] and sent.body == b""
    assert (await local(client, V + "1")).status_code == 404


async def test_registered_content_type_and_context(client: httpx.AsyncClient,
                                                   source: ContextSource) -> None:
    await register(client, source, "exclusive", ids=[V + "1"], names=["speed"],
                   contextSourceInfo=[{"key": "contentType", "value": "application/ld+json"},
                                      {"key": "X-Trace", "value": "urn:ngsi-ld:request"}])
    r = await client.post("entities", json=vehicle(V + "1", speed=1),
                          headers={"X-Trace": "t-1"})
    assert r.status_code == 201, r.text
    [sent] = source.on("POST")
    assert sent.header("Content-Type") == "application/ld+json"
    assert sent.json()["@context"] == CTX and sent.json()["speed"]["value"] == 1
    assert sent.header("X-Trace") == "t-1"  # copied from the request (clause 4.3.6.5)


async def test_batch_create_splits_per_entity(client: httpx.AsyncClient,
                                              source: ContextSource) -> None:
    source.answer("POST", "/ngsi-ld/v1/entityOperations/create", 201, [V + "1", V + "2"])
    await register(client, source, "exclusive", ids=[V + "1", V + "2"], names=["speed"],
                   operations=["createBatch"])
    items = [vehicle(V + "1", speed=1, brand="a"), vehicle(V + "2", speed=2),
             vehicle(V + "3", speed=3)]
    r = await client.post("entityOperations/create", json=items)
    assert r.status_code == 201, r.text
    assert sorted(r.json()) == [V + "1", V + "2", V + "3"]
    [sent] = source.on("POST", "/ngsi-ld/v1/entityOperations/create")
    assert sent.json() == [vehicle(V + "1", speed=1), vehicle(V + "2", speed=2)]
    one = (await local(client, V + "1")).json()
    assert "speed" not in one and one["brand"]["value"] == "a"
    assert (await local(client, V + "2")).status_code == 404  # nothing of it is kept here
    assert (await local(client, V + "3")).json()["speed"]["value"] == 3


async def test_batch_upsert_and_delete_redirected(client: httpx.AsyncClient,
                                                  source: ContextSource) -> None:
    rid = await register(client, source, "redirect",
                         operations=["upsertBatch", "deleteBatch"])
    r = await client.post("entityOperations/upsert", params={"options": "update"},
                          json=[vehicle(V + "1", speed=1), vehicle(V + "2", speed=2)])
    assert r.status_code == 204, r.text
    [sent] = source.on("POST", "/ngsi-ld/v1/entityOperations/upsert")
    assert ("options", "update") in sent.query
    assert sent.json() == [vehicle(V + "1", speed=1), vehicle(V + "2", speed=2)]
    assert (await local(client, V + "1")).status_code == 404

    source.answer("POST", "/ngsi-ld/v1/entityOperations/delete", 207, {
        "success": [V + "1"], "errors": [{"entityId": V + "2", "error": {
            "type": "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound",
            "title": "Not found", "status": 404}}]})
    r = await client.post("entityOperations/delete", json=[V + "1", V + "2"])
    assert r.status_code == 207, r.text
    assert r.json()["success"] == [V + "1"]
    assert r.json()["errors"] == [{"entityId": V + "2", "registrationId": rid, "error": {
        "type": "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound",
        "title": "Not found", "status": 404}}]
    assert source.on("POST", "/ngsi-ld/v1/entityOperations/delete")[0].json() == \
        [V + "1", V + "2"]


async def test_an_unreachable_source_is_reported(client: httpx.AsyncClient) -> None:
    with ContextSource() as gone:
        base = gone.base
    r = await client.post("csourceRegistrations", json={
        "type": "ContextSourceRegistration", "endpoint": base, "mode": "inclusive",
        "operations": ["redirectionOps"], "information": [{"entities": [{"type": "Vehicle"}]}]})
    assert r.status_code == 201, r.text
    r = await client.post("entities", json=vehicle(V + "1"))
    assert r.status_code == 207, r.text
    assert r.json()["success"] == [V + "1"]
    assert r.headers["NGSILD-Warning"].startswith("199 ")


async def test_an_entity_of_another_type_is_not_forwarded(client: httpx.AsyncClient,
                                                          source: ContextSource) -> None:
    await register(client, source, "inclusive")  # every Vehicle
    building = {"id": "urn:ngsi-ld:Building:1", "type": "Building",
                "height": {"type": "Property", "value": 1}}
    assert (await client.post("entities", json=building)).status_code == 201
    r = await client.patch("entities/urn:ngsi-ld:Building:1/attrs",
                           json={"height": {"type": "Property", "value": 2}})
    assert r.status_code == 204, r.text
    r = await client.post("entityOperations/update", json=[
        {"id": "urn:ngsi-ld:Building:1", "height": {"type": "Property", "value": 3}}])
    assert r.status_code == 204, r.text
    assert (await client.delete("entities/urn:ngsi-ld:Building:1")).status_code == 204
    assert source.requests == []
    # a Vehicle named by id only is still forwarded once its type is known here
    await client.post("entities", json=vehicle(V + "1"), params={"local": "true"})
    assert (await client.delete(f"entities/{V}1")).status_code == 204
    assert [r.path for r in source.requests] == [f"/ngsi-ld/v1/entities/{V}1"]


async def test_a_caller_may_not_forward_what_it_may_not_write(store_url: str,
                                                              source: ContextSource) -> None:
    with local_issuer() as issuer:
        async with broker(secured_settings(store_url, issuer)) as b:
            access = b.services.access
            _, admin = await access.create_key(OPEN, "", Role.TENANT_ADMIN, "admin")
            _, reader = await access.create_key(OPEN, "", Role.READER, "reader")
            _, writer = await access.create_key(OPEN, "", Role.WRITER, "writer")
            async with b.client(key=admin) as c:
                r = await c.post("/ngsi-ld/v1/csourceRegistrations", json={
                    "type": "ContextSourceRegistration", "endpoint": source.base,
                    "mode": "redirect", "operations": ["redirectionOps", "createBatch"],
                    "information": [{"entities": [{"type": "Vehicle"}]}]})
                assert r.status_code == 201, r.text
            async with b.client(key=reader) as c:
                r = await c.post("/ngsi-ld/v1/entities", json=vehicle(V + "1"))
                assert r.status_code == 403, r.text
                r = await c.delete("/ngsi-ld/v1/entities", params={"type": "Vehicle"})
                assert r.status_code == 403, r.text
                r = await c.post("/ngsi-ld/v1/entityOperations/create", json=[vehicle(V + "2")])
                assert r.status_code == 207, r.text
                assert r.json()["errors"][0]["error"]["status"] == 403
                assert source.requests == []
            async with b.client(key=writer) as c:
                r = await c.post("/ngsi-ld/v1/entities", json=vehicle(V + "1"))
                assert r.status_code == 201, r.text
                assert [r.path for r in source.requests] == ["/ngsi-ld/v1/entities"]


async def test_a_batch_of_entities_with_different_contexts(client: httpx.AsyncClient,
                                                           source: ContextSource) -> None:
    await register(client, source, "inclusive", operations=["createBatch"])
    other = {"speed": "https://example.org/speed"}
    items = [{**vehicle(V + "1", speed=1), "@context": CTX},
             {**vehicle(V + "2", speed=2), "@context": [other, CTX]}]
    r = await client.post("entityOperations/create", json=items,
                          headers={"Content-Type": "application/ld+json"})
    assert r.status_code == 201, r.text
    [sent] = source.on("POST")
    assert sent.header("Content-Type") == "application/ld+json" and sent.header("Link") is None
    assert [e["@context"] for e in sent.json()] == [CTX, [other, CTX]]
    # one @context for all: JSON with a Link
    r = await client.post("entityOperations/create", headers={"Link": (
        f'<{CTX}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"')},
        json=[vehicle(V + "3")])
    assert r.status_code == 201, r.text
    last = source.on("POST")[-1]
    assert last.header("Content-Type") == "application/json" and CTX in (last.header("Link")
                                                                          or "")
    assert last.json() == [vehicle(V + "3")]


async def test_a_cooling_exclusive_source_is_not_replaced_by_this_broker(
        client: httpx.AsyncClient) -> None:
    with ContextSource() as gone:
        base = gone.base
    r = await client.post("csourceRegistrations", json={
        "type": "ContextSourceRegistration", "endpoint": base, "mode": "exclusive",
        "operations": ["redirectionOps"], "management": {"cooldown": 60000},
        "information": [{"entities": [{"id": V + "1", "type": "Vehicle"}],
                         "propertyNames": ["speed"]}]})
    assert r.status_code == 201, r.text
    r = await client.post("entities", json=vehicle(V + "1", speed=1, brand="x"))
    assert r.status_code == 207, r.text  # the source is down: its part failed
    r = await client.patch(f"entities/{V}1/attrs", json={"speed": {"type": "Property",
                                                                    "value": 2}})
    assert r.status_code == 503, r.text  # cooling down: neither sent nor kept here
    assert "speed" not in (await local(client, V + "1")).json()
