"""Query Temporal Evolution of Entities (clause 5.7.4), aggregation (4.5.19) and bad input."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

BAD = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
INVALID = "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest"
WINDOW = "timerel=after&timeAt=2024-05-01T00:00:00Z"



def obs(value: Any, minute: int, hour: int = 10, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value,
            "observedAt": f"2024-05-01T{hour:02d}:{minute:02d}:00Z", **extra}


def gauge(n: int, levels: list[float], **extra: Any) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Gauge:{n}", "type": "Gauge",
            "level": [obs(v, i) for i, v in enumerate(levels)], **extra}


@pytest.fixture
async def gauges(client: httpx.AsyncClient) -> httpx.AsyncClient:
    for body in (
        gauge(1, [1.0, 5.0, 3.0], scope="/Kyoto",
              location=[{"type": "GeoProperty", "value": {"type": "Point",
                                                          "coordinates": [135.7, 35.0]},
                         "observedAt": "2024-05-01T10:00:00Z"}]),
        gauge(2, [2.0, 2.0], scope="/Osaka"),
        {"id": "urn:ngsi-ld:Dam:1", "type": "Dam", "level": [obs(40.0, 0)]},
    ):
        r = await client.post("temporal/entities", json=body)
        assert r.status_code == 201, r.text
    return client


async def query(client: httpx.AsyncClient, params: str, status: int = 200) -> Any:
    r = await client.get(f"temporal/entities?{params}")
    assert r.status_code == status, r.text
    return r.json()


def ids(body: list[dict[str, Any]]) -> list[str]:
    return [e["id"] for e in body]


async def test_query_by_type_id_and_pattern(gauges: httpx.AsyncClient) -> None:
    assert ids(await query(gauges, f"type=Gauge&{WINDOW}")) == [
        "urn:ngsi-ld:Gauge:1", "urn:ngsi-ld:Gauge:2"]
    assert ids(await query(gauges, f"type=Gauge,Dam&id=urn:ngsi-ld:Dam:1&{WINDOW}")) == [
        "urn:ngsi-ld:Dam:1"]
    assert ids(await query(gauges, f"type=Gauge&idPattern=.*:2$&{WINDOW}")) == [
        "urn:ngsi-ld:Gauge:2"]
    assert ids(await query(gauges, f"local=true&{WINDOW}")) == [
        "urn:ngsi-ld:Gauge:1", "urn:ngsi-ld:Gauge:2", "urn:ngsi-ld:Dam:1"]
    assert ids(await query(gauges, f"type=Gauge&orderBy=id;desc&{WINDOW}")) == [
        "urn:ngsi-ld:Gauge:2", "urn:ngsi-ld:Gauge:1"]


async def test_q_and_geo_are_judged_on_windowed_instances(gauges: httpx.AsyncClient) -> None:
    assert ids(await query(gauges, f"type=Gauge&q=level>4&{WINDOW}")) == ["urn:ngsi-ld:Gauge:1"]
    late = "timerel=after&timeAt=2024-05-01T10:02:00Z"
    assert ids(await query(gauges, f"type=Gauge&q=level>4&{late}")) == []
    near = "georel=near;maxDistance==1000&geometry=Point&coordinates=[135.7,35.0]"
    assert ids(await query(gauges, f"type=Gauge&{near}&{WINDOW}")) == ["urn:ngsi-ld:Gauge:1"]
    assert ids(await query(gauges, f"type=Gauge&scopeQ=/Osaka&{WINDOW}")) == [
        "urn:ngsi-ld:Gauge:2"]


async def test_paging_and_count(gauges: httpx.AsyncClient) -> None:
    r = await gauges.get(f"temporal/entities?type=Gauge,Dam&limit=1&count=true&{WINDOW}")
    assert r.status_code == 200
    assert r.headers["NGSILD-Results-Count"] == "3"
    assert 'rel="next"' in r.headers["link"]
    assert len(r.json()) == 1


async def test_entities_without_windowed_instances_are_left_out(
    gauges: httpx.AsyncClient,
) -> None:
    late = "timerel=after&timeAt=2024-05-01T10:02:00Z"
    body = await query(gauges, f"type=Gauge&attrs=level&{late}")
    assert ids(body) == ["urn:ngsi-ld:Gauge:1"]
    # a scope given as a plain value is in force from the write: Gauge 2 has that instance
    assert ids(await query(gauges, f"type=Gauge&{late}")) == [
        "urn:ngsi-ld:Gauge:1", "urn:ngsi-ld:Gauge:2"]
    assert [i["value"] for i in body[0]["level"]] == [3.0]


async def test_aggregated_values(gauges: httpx.AsyncClient) -> None:
    body = await query(gauges, "type=Gauge&options=aggregatedValues&aggrMethods=avg,max,"
                               f"totalCount&aggrPeriodDuration=PT2M&attrs=level&{WINDOW}")
    first = body[0]["level"]
    assert first["type"] == "Property"
    assert first["avg"] == [[3.0, "2024-05-01T10:00:00Z", "2024-05-01T10:02:00Z"],
                            [3.0, "2024-05-01T10:02:00Z", "2024-05-01T10:04:00Z"]]
    assert first["max"][0][0] == 5.0 and first["totalCount"][0][0] == 2
    one = await gauges.get("temporal/entities/urn:ngsi-ld:Gauge:2?options=aggregatedValues"
                           "&aggrMethods=sum")
    assert one.json()["level"]["sum"] == [[4.0, "2024-05-01T10:00:00Z", "2024-05-01T10:01:00Z"]]


async def test_post_query(gauges: httpx.AsyncClient) -> None:
    r = await gauges.post("temporal/entityOperations/query", json={
        "type": "Query", "entities": [{"type": "Gauge"}], "attrs": ["level"],
        "temporalQ": {"timerel": "before", "timeAt": "2024-05-01T10:01:00Z"}})
    assert r.status_code == 200, r.text
    assert [len(e["level"]) for e in r.json()] == [1, 1]
    r = await gauges.post("temporal/entityOperations/query", json={
        "type": "Query", "entities": [{"type": "Gauge"}],
        "temporalQ": {"timerel": "after", "timeAt": "2024-05-01T00:00:00Z"},
        "aggrParams": {"aggrMethods": ["min"], "aggrPeriodDuration": "PT1H"}})
    assert r.status_code == 200, r.text
    assert r.json()[0]["level"]["min"][0][0] == 1.0
    r = await gauges.post("temporal/entityOperations/query", json={
        "type": "Query", "entities": [{"type": "Gauge"}],
        "temporalQ": {"timerel": "after", "timeAt": "2024-05-01T00:00:00Z", "lastN": 0}})
    assert r.status_code == 400 and r.json()["type"] == BAD


@pytest.mark.parametrize(
    "params",
    [
        "type=Gauge&timerel=during&timeAt=2024-05-01T00:00:00Z",
        "type=Gauge&timerel=after",
        "type=Gauge&timerel=after&timeAt=2024-05-01",
        "type=Gauge&timerel=after&timeAt=soon",
        "type=Gauge&timerel=between&timeAt=2024-05-01T00:00:00Z",
        "type=Gauge&timerel=between&timeAt=2024-05-01T00:00:00Z&endTimeAt=never",
        f"type=Gauge&{WINDOW}&timeproperty=expiresAt",
        f"type=Gauge&{WINDOW}&lastN=0",
        f"type=Gauge&{WINDOW}&lastN=-1",
        f"type=Gauge&{WINDOW}&lastN=1.5",
        f"type=Gauge&{WINDOW}&options=aggregatedValues&aggrMethods=median",
        f"type=Gauge&{WINDOW}&options=aggregatedValues&aggrMethods=avg&aggrPeriodDuration=1H",
        f"type=Gauge&{WINDOW}&options=aggregatedValues",
        f"type=Gauge&{WINDOW}&orderBy=level",
        f"type=Gauge&{WINDOW}&pick=level&omit=level",
        f"type=Gauge&{WINDOW}&pick=level&attrs=level",
        f"type=Gauge&{WINDOW}&q=owner{{name}}==%22x%22",
        f"id=urn:ngsi-ld:Gauge:1&{WINDOW}",
        f"attrs=createdAt&{WINDOW}",
        WINDOW,
    ],
)
async def test_bad_queries_are_bad_request_data(gauges: httpx.AsyncClient, params: str) -> None:
    body = await query(gauges, params, status=400)
    assert body["type"] == BAD


@pytest.mark.parametrize("params", [f"type=Gauge&{WINDOW}&format=wide",
                                    f"type=Gauge&{WINDOW}&options=temporalValues,wide",
                                    f"type=Gauge&{WINDOW}&nonsense=1"])
async def test_unknown_parameters_are_invalid_requests(
    gauges: httpx.AsyncClient, params: str
) -> None:
    assert (await query(gauges, params, status=400))["type"] == INVALID


async def test_retrieve_rejects_bad_temporal_input_too(gauges: httpx.AsyncClient) -> None:
    for params in ("timerel=after", "lastN=0", "aggrMethods=bogus&options=aggregatedValues",
                   "options=aggregatedValues&aggrMethods=avg&aggrPeriodDuration=P1X"):
        r = await gauges.get(f"temporal/entities/urn:ngsi-ld:Gauge:1?{params}")
        assert r.status_code == 400, params
        assert r.json()["type"] == BAD


async def test_format_wins_over_options(gauges: httpx.AsyncClient) -> None:
    body = await query(gauges, f"type=Gauge&format=temporalValues&options=aggregatedValues"
                               f"&aggrMethods=sum&{WINDOW}")
    assert body[0]["level"]["values"][0] == [1.0, "2024-05-01T10:00:00Z"]


async def test_entity_map_fixes_the_result(gauges: httpx.AsyncClient) -> None:
    r = await gauges.get(f"temporal/entities?type=Gauge&id=urn:ngsi-ld:Gauge:1&entityMap=true"
                         f"&{WINDOW}")
    assert r.status_code == 201
    location = r.headers["NGSILD-EntityMap"]
    assert location.startswith("/ngsi-ld/v1/entityMaps/")
    r = await gauges.get(f"temporal/entities?type=Gauge&{WINDOW}",
                         headers={"NGSILD-EntityMap": location})
    assert r.status_code == 200 and ids(r.json()) == ["urn:ngsi-ld:Gauge:1"]
    assert r.headers["NGSILD-EntityMap"] == location
