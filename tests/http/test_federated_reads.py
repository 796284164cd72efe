"""Distributed reads (clauses 4.3.6, 5.7.1, 5.7.2, 6.3.17, 6.3.18) against a real HTTP
context source: merging, modes, filters and paging over merged results, warnings for
failing, slow, oversized and invalid sources, Via and loops, the registration's counters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from tests.conftest import _lifespan
from tests.http.context_source import ContextSource
from urbanos.http.app import create_app
from urbanos.settings import Settings

V1 = "urn:ngsi-ld:Vehicle:1"
V2 = "urn:ngsi-ld:Vehicle:2"


@pytest.fixture
def source() -> Iterator[ContextSource]:
    with ContextSource() as cs:
        yield cs


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(replace(settings, federation_max_bytes=4096, federation_timeout=2.0))
    async with _lifespan(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://broker/ngsi-ld/v1/"
    ) as c:
        yield c


async def register(c: httpx.AsyncClient, endpoint: str, *, rid: str = "urn:ngsi-ld:R:1",
                   mode: str = "inclusive", entities: list[dict[str, Any]] | None = None,
                   **extra: Any) -> None:
    info: dict[str, Any] = {"entities": entities or [{"type": "Vehicle"}]}
    if "propertyNames" in extra:
        info["propertyNames"] = extra.pop("propertyNames")
    body = {"id": rid, "type": "ContextSourceRegistration", "endpoint": endpoint,
            "information": [info], "mode": mode, **extra}
    r = await c.post("csourceRegistrations", json=body)
    assert r.status_code == 201, r.text


def vehicle(eid: str, **attrs: Any) -> dict[str, Any]:
    return {"id": eid, "type": "Vehicle",
            **{k: {"type": "Property", "value": v} for k, v in attrs.items()}}


async def test_retrieve_merges_the_source_and_tells_it_who_asks(
    broker: httpx.AsyncClient, source: ContextSource
) -> None:
    assert (await broker.post("entities", json=vehicle(V1, speed=10))).status_code == 201
    await register(broker, source.base, contextSourceInfo=[{"key": "X-Key", "value": "k"}])
    source.answer("GET", f"/ngsi-ld/v1/entities/{V1}", 200, vehicle(V1, brand="Volvo"))
    r = await broker.get(f"entities/{V1}")
    assert r.status_code == 200, r.text
    assert r.json()["speed"]["value"] == 10
    assert r.json()["brand"]["value"] == "Volvo"
    assert "NGSILD-Warning" not in r.headers
    (sent,) = source.on("GET")
    assert sent.header("Via").startswith("1.1 urbanos-")
    assert sent.header("Accept")
    assert sent.header("X-Key") == "k"
    reg = (await broker.get("csourceRegistrations/urn:ngsi-ld:R:1")).json()
    assert reg["timesSent"] == 1 and reg["status"] == "ok" and "lastSuccess" in reg
    local = await broker.get(f"entities/{V1}", params={"local": "true"})
    assert "brand" not in local.json()
    assert len(source.on("GET")) == 1


async def test_failing_sources_are_warnings_not_errors(
    broker: httpx.AsyncClient, source: ContextSource
) -> None:
    await register(broker, source.base)
    path = f"/ngsi-ld/v1/entities/{V1}"
    source.answer("GET", path, 500, {"type": "x"})
    r = await broker.get(f"entities/{V1}")
    assert r.status_code == 404 and r.headers["NGSILD-Warning"].startswith("299 ")
    source.answer("GET", path, 404, None)
    r = await broker.get(f"entities/{V1}")
    assert r.status_code == 404 and "NGSILD-Warning" not in r.headers
    source.answer("GET", path, 200, {"id": V1, "type": "Vehicle", "speed": None})
    r = await broker.get(f"entities/{V1}")
    assert r.status_code == 404 and r.headers["NGSILD-Warning"].startswith("111 ")
    source.answer("GET", path, 200, vehicle(V1, blob="x" * 5000))  # above the 4096 cap
    r = await broker.get(f"entities/{V1}")
    assert r.status_code == 404 and r.headers["NGSILD-Warning"].startswith("111 ")
    reg = (await broker.get("csourceRegistrations/urn:ngsi-ld:R:1")).json()
    assert reg["timesSent"] == 4 and reg["timesFailed"] == 3 and reg["status"] == "failed"


async def test_a_silent_source_costs_its_timeout_only(
    broker: httpx.AsyncClient, source: ContextSource
) -> None:
    done = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()  # reads the request, never answers
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await register(broker, f"http://127.0.0.1:{port}", rid="urn:ngsi-ld:R:slow",
                       management={"timeout": 300})
        await register(broker, source.base, rid="urn:ngsi-ld:R:ok")
        source.answer("GET", "/ngsi-ld/v1/entities", 200, [vehicle(V2, speed=3)])
        started = time.monotonic()
        r = await broker.get("entities", params={"type": "Vehicle"})
        assert time.monotonic() - started < 2.0
        assert r.status_code == 200
        assert [e["id"] for e in r.json()] == [V2]
        assert r.headers["NGSILD-Warning"].startswith("199 ")
    finally:
        done.set()
        server.close()
        await server.wait_closed()


async def test_queries_merge_split_entities_then_filter_and_page(
    broker: httpx.AsyncClient, source: ContextSource
) -> None:
    for eid, speed in ((V1, 10), (V2, 80), ("urn:ngsi-ld:Vehicle:3", 90)):
        assert (await broker.post("entities", json=vehicle(eid, speed=speed))).status_code == 201
    await register(broker, source.base)
    source.answer("GET", "/ngsi-ld/v1/entities", 200, [
        vehicle(V1, brand="Volvo"), vehicle(V2, brand="Seat"),
        vehicle("urn:ngsi-ld:Vehicle:9", brand="Fiat", speed=99),
    ])
    r = await broker.get("entities", params={"type": "Vehicle", "count": "true", "limit": "2"})
    assert r.status_code == 200
    assert r.headers["NGSILD-Results-Count"] == "4"
    assert [e["id"] for e in r.json()] == [V1, V2]
    assert r.json()[0]["brand"]["value"] == "Volvo"
    assert 'rel="next"' in r.headers["Link"]
    split = await broker.get("entities", params={
        "type": "Vehicle", "q": 'brand=="Seat"', "splitEntities": "true", "count": "true"})
    assert [e["id"] for e in split.json()] == [V2]
    forwarded = source.on("GET", "/ngsi-ld/v1/entities")[-1]
    assert not any(k == "q" for k, _ in forwarded.query)
    plain = await broker.get("entities", params={"type": "Vehicle", "q": "speed>50"})
    assert ("q", "speed>50") in source.on("GET")[-1].query
    assert {e["id"] for e in plain.json()} >= {V2, "urn:ngsi-ld:Vehicle:9"}
    ordered = await broker.get("entities", params={"type": "Vehicle", "orderBy": "speed"})
    assert ordered.status_code == 400
    posted = await broker.post("entityOperations/query", json={
        "type": "Query", "entities": [{"type": "Vehicle"}]}, params={"count": "true"})
    assert posted.headers["NGSILD-Results-Count"] == "4"


async def test_exclusive_sources_alone_hold_their_attributes(
    broker: httpx.AsyncClient, source: ContextSource
) -> None:
    await register(broker, source.base, mode="exclusive",
                   entities=[{"id": V1, "type": "Vehicle"}], propertyNames=["speed"])
    # a local speed (written here only) does not shadow the exclusive source's
    r = await broker.post("entities", json=vehicle(V1, speed=10, brand="x"),
                          params={"local": "true"})
    assert r.status_code == 201, r.text
    source.answer("GET", f"/ngsi-ld/v1/entities/{V1}", 200, vehicle(V1, speed=55))
    r = await broker.get(f"entities/{V1}")
    assert r.json()["speed"]["value"] == 55 and r.json()["brand"]["value"] == "x"
    (sent,) = source.on("GET")
    assert ("attrs", "speed") in sent.query


async def test_a_request_looping_back_to_a_redirect_source_is_508(
    broker: httpx.AsyncClient, source: ContextSource
) -> None:
    await register(broker, source.base, mode="redirect",
                   contextSourceInfo=[{"key": "alias", "value": "peer-b"}])
    r = await broker.get(f"entities/{V1}", headers={"Via": "1.1 peer-b"})
    assert r.status_code == 508
    assert source.on("GET") == []


async def test_registration_changes_reach_the_cache_and_maps_name_sources(
    broker: httpx.AsyncClient, source: ContextSource
) -> None:
    await register(broker, source.base)
    source.answer("GET", "/ngsi-ld/v1/entities", 200, [vehicle(V2, speed=3)])
    r = await broker.get("entities", params={"type": "Vehicle", "entityMap": "true"})
    assert r.status_code == 201
    emap = (await broker.get("http://broker" + r.headers["NGSILD-EntityMap"])).json()
    assert emap["entityMap"] == {V2: ["urn:ngsi-ld:R:1"]}
    assert (await broker.delete("csourceRegistrations/urn:ngsi-ld:R:1")).status_code == 204
    r = await broker.get("entities", params={"type": "Vehicle"})
    assert r.json() == []
    assert len(source.on("GET")) == 1


async def test_types_and_attributes_include_the_sources(
    broker: httpx.AsyncClient, source: ContextSource
) -> None:
    assert (await broker.post("entities", json=vehicle(V1, speed=10))).status_code == 201
    await register(broker, source.base, entities=[{"type": "Lamp"}])
    source.answer("GET", "/ngsi-ld/v1/types", 200, {"id": "urn:x", "type": "EntityTypeList",
                                                    "typeList": ["Lamp"]})
    source.answer("GET", "/ngsi-ld/v1/types/Lamp", 200, {
        "id": "urn:x", "type": "EntityTypeInfo", "typeName": "Lamp", "entityCount": 3,
        "attributeDetails": [{"id": "urn:a", "type": "Attribute", "attributeName": "level",
                              "attributeTypes": ["Property"]}]})
    source.answer("GET", "/ngsi-ld/v1/attributes", 200, {"attributeList": ["level"]})
    r = await broker.get("types")
    assert sorted(r.json()["typeList"]) == ["Lamp", "Vehicle"]
    info = (await broker.get("types/Lamp")).json()
    assert info["entityCount"] == 3 and info["attributeDetails"][0]["attributeName"] == "level"
    attrs = await broker.get("attributes")
    assert sorted(attrs.json()["attributeList"]) == ["level", "speed"]
    local = await broker.get("types", params={"local": "true"})
    assert local.json()["typeList"] == ["Vehicle"]
    source.answer("GET", "/ngsi-ld/v1/types", 200, {"typeList": [1, 2]})
    bad = await broker.get("types")
    assert bad.json()["typeList"] == ["Vehicle"]
    assert bad.headers["NGSILD-Warning"].startswith("111 ")


async def test_hostile_answers_are_left_out(
    broker: httpx.AsyncClient, source: ContextSource
) -> None:
    await register(broker, source.base)
    hostile: list[Any] = [
        [1, "x", None],
        {"id": "not a uri", "type": "Vehicle"},
        {"id": V1, "type": "Vehicle", "@context": "http://169.254.169.254/latest/ctx"},
        {"id": V1, "type": "Vehicle", "@context": {"@vocab": 5}},
        {"id": V1, "type": "Vehicle", "speed": {"type": "Relationship", "object": "x y"}},
    ]
    for body in hostile:
        source.answer("GET", f"/ngsi-ld/v1/entities/{V1}", 200, body)
        r = await broker.get(f"entities/{V1}")
        assert r.status_code == 404, (body, r.text)
        assert r.headers["NGSILD-Warning"].startswith("111 "), body


async def test_temporal_retrieve_unites_the_sources_instances(
    broker: httpx.AsyncClient, source: ContextSource
) -> None:
    def at(day: int, value: Any) -> dict[str, Any]:
        return {"type": "Property", "value": value, "observedAt": f"2025-01-0{day}T00:00:00Z"}

    r = await broker.post("temporal/entities", json={
        "id": V1, "type": "Vehicle", "speed": [at(1, 1), at(3, 3)]})
    assert r.status_code == 201, r.text
    await register(broker, source.base, operations=["retrieveTemporal"])
    source.answer("GET", f"/ngsi-ld/v1/temporal/entities/{V1}", 200, {
        "id": V1, "type": "Vehicle", "speed": [at(2, 2), at(3, 3)], "brand": [at(1, "x")]})
    got = await broker.get(f"temporal/entities/{V1}")
    assert got.status_code == 200, got.text
    assert [i["value"] for i in got.json()["speed"]] == [1, 2, 3]
    brand = got.json()["brand"]
    assert (brand if isinstance(brand, list) else [brand])[0]["value"] == "x"
    last = await broker.get(f"temporal/entities/{V1}", params={"lastN": "1", "attrs": "speed"})
    speed = last.json()["speed"]
    assert (speed if isinstance(speed, list) else [speed])[0]["value"] == 3
    assert ("lastN", "1") in source.on("GET")[-1].query
    local = await broker.get(f"temporal/entities/{V1}", params={"local": "true"})
    assert "brand" not in local.json()
    source.answer("GET", "/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:Vehicle:9", 200, {
        "id": "urn:ngsi-ld:Vehicle:9", "type": "Vehicle", "speed": [at(1, 7)]})
    remote_only = await broker.get("temporal/entities/urn:ngsi-ld:Vehicle:9")
    assert remote_only.status_code == 200, remote_only.text
    source.answer("GET", f"/ngsi-ld/v1/temporal/entities/{V1}", 200, {"id": 5})
    bad = await broker.get(f"temporal/entities/{V1}")
    assert bad.status_code == 200 and bad.headers["NGSILD-Warning"].startswith("111 ")


async def test_temporal_query_unites_local_and_remote_entities(
    broker: httpx.AsyncClient, source: ContextSource
) -> None:
    def at(day: int, value: Any) -> dict[str, Any]:
        return {"type": "Property", "value": value, "observedAt": f"2025-01-0{day}T00:00:00Z"}

    for eid in (V1, V2):
        r = await broker.post("temporal/entities", json={
            "id": eid, "type": "Vehicle", "speed": [at(1, 1)]})
        assert r.status_code == 201, r.text
    await register(broker, source.base, operations=["queryTemporal"])
    source.answer("GET", "/ngsi-ld/v1/temporal/entities", 200, [
        {"id": V2, "type": "Vehicle", "speed": [at(2, 2)]},
        {"id": "urn:ngsi-ld:Vehicle:9", "type": "Vehicle", "speed": [at(3, 9)]}])
    r = await broker.get("temporal/entities", params={
        "type": "Vehicle", "count": "true", "limit": "2", "timerel": "after",
        "timeAt": "2024-01-01T00:00:00Z"})
    assert r.status_code == 200, r.text
    assert r.headers["NGSILD-Results-Count"] == "3"
    assert [e["id"] for e in r.json()] == [V1, V2]
    second = r.json()[1]["speed"]
    assert [i["value"] for i in second] == [1, 2]
    (sent,) = source.on("GET", "/ngsi-ld/v1/temporal/entities")
    assert ("timerel", "after") in sent.query and ("type", "Vehicle") in sent.query
    rest = await broker.get("temporal/entities", params={
        "type": "Vehicle", "offset": "2", "timerel": "after", "timeAt": "2024-01-01T00:00:00Z"})
    assert [e["id"] for e in rest.json()] == ["urn:ngsi-ld:Vehicle:9"]


async def test_forwarding_obeys_the_outbound_policy_and_sends_no_secrets(
    source: ContextSource
) -> None:
    """Every forwarded request passes the outbound-URL policy (here strict: loopback is
    refused before any connection) and never carries a tenant or connection header a
    registration tried to set."""
    from urbanos.core.federation import Target
    from urbanos.outbound import OutboundPolicy
    from urbanos.services.federation import Federation
    from urbanos.storage.memory_registrations import MemoryRegistrationStore

    doc = {"id": "urn:ngsi-ld:R:1", "endpoint": source.base, "mode": "inclusive",
           "information": [{"entities": [{"type": "https://example.org/Vehicle"}]}],
           "contextSourceInfo": [{"key": "NGSILD-Tenant", "value": "other"},
                                 {"key": "Connection", "value": "upgrade"},
                                 {"key": "X-Ok", "value": "yes"}]}
    strict = Federation(MemoryRegistrationStore(), OutboundPolicy(mode="strict"),
                        alias=lambda tenant: "me")
    try:
        (reply,) = await strict.send("t1", [Target(doc, "inclusive", None)], "GET", "/x")
        assert reply.warning is not None and reply.warning.startswith("299 ")
        assert source.requests == []
    finally:
        await strict.aclose()
    open_ = Federation(MemoryRegistrationStore(), OutboundPolicy(), alias=lambda tenant: "me")
    try:
        source.answer("GET", "/x", 200, {"ok": True})
        (reply,) = await open_.send("t1", [Target(doc, "inclusive", None)], "GET", "/x",
                                    via="1.1 peer")
        assert reply.ok and reply.body == {"ok": True}
        (sent,) = source.requests
        # no tenant in the registration: the source's default tenant (clause 5.2.9), not
        # the caller's tenant here, nor one contextSourceInfo tried to set
        assert sent.header("NGSILD-Tenant") is None
        assert sent.header("Connection") != "upgrade"
        assert sent.header("X-Ok") == "yes"
        assert sent.header("Via") == "1.1 peer, 1.1 me"
        source.answer("GET", "/x", 200, {"ok": True})
        await open_.send("t1", [Target({**doc, "tenant": "remote"}, "inclusive", None)],
                         "GET", "/x")
        assert source.requests[-1].header("NGSILD-Tenant") == "remote"
    finally:
        await open_.aclose()


async def test_a_failed_source_cools_down(
    broker: httpx.AsyncClient, source: ContextSource
) -> None:
    await register(broker, source.base, management={"cooldown": 60_000})
    source.answer("GET", "/ngsi-ld/v1/entities", 500, None)
    first = await broker.get("entities", params={"type": "Vehicle"})
    assert first.headers["NGSILD-Warning"].startswith("299 ")
    again = await broker.get("entities", params={"type": "Vehicle"})
    assert again.status_code == 200 and again.json() == []
    assert again.headers["NGSILD-Warning"].startswith("199 ")
    assert "cooling down" in again.headers["NGSILD-Warning"]
    assert len(source.on("GET")) == 1
