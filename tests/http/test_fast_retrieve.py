"""Retrieve Entity takes a short path past the routing table; its answers, errors and
metrics must be those of the full stack, and a request runs once."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.conftest import _lifespan
from urbanos.core.render import RenderOptions
from urbanos.http.app import PathNormalizer, create_app
from urbanos.http.endpoints.entity_reads import PLAIN_OPTIONS
from urbanos.http.fast_paths import FastRetrieve
from urbanos.settings import Settings

EID = "urn:ngsi-ld:Lamp:bridge/1"  # a '/' inside the id travels as %2F
LAMP = {"id": EID, "type": "Lamp", "colour": {"type": "Property", "value": "red"}}
PATH = "entities/urn:ngsi-ld:Lamp:bridge%2F1"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"


def count(metrics: str, status: str) -> float:
    # the Retrieve Entity route, not another ending the same way (temporal entities)
    pattern = (r'urbanos_http_requests_total\{method="GET",route="/ngsi-ld/v1/entities/'
               rf'\{{entity_id[^"]*\}}",status="{status}"\}} (\S+)')
    found = re.search(pattern, metrics)
    return float(found.group(1)) if found else 0.0


async def metrics(client: httpx.AsyncClient) -> str:
    return (await client.get("http://broker/metrics")).text


async def test_the_entity_its_headers_and_one_count_in_the_metrics(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post("entities", json=LAMP)).status_code == 201
    before = count(await metrics(client), "200")
    r = await client.get(PATH)
    assert r.status_code == 200
    assert r.json() == {"id": EID, "type": "Lamp",
                        "colour": {"type": "Property", "value": "red"}}
    assert r.headers["content-type"] == "application/json"
    assert "ngsi-ld-core-context" in r.headers["link"]
    assert count(await metrics(client), "200") == before + 1


async def test_json_ld_carries_the_context_in_the_body(client: httpx.AsyncClient) -> None:
    assert (await client.post("entities", json=LAMP)).status_code == 201
    r = await client.get(PATH, headers={"Accept": "application/ld+json"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/ld+json"
    assert "@context" in r.json()


async def test_errors_are_the_full_stacks_problem_details_counted_once(
    client: httpx.AsyncClient,
) -> None:
    before = count(await metrics(client), "404")
    r = await client.get("entities/urn:ngsi-ld:Lamp:nowhere")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"
    assert count(await metrics(client), "404") == before + 1
    r = await client.get("entities/not-a-uri")
    assert r.status_code == 400
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    r = await client.get(PATH, headers={"Accept": "text/html"})
    assert r.status_code == 406


async def test_the_tenant_header_is_honoured(client: httpx.AsyncClient) -> None:
    r = await client.post("entities", json=LAMP, headers={"NGSILD-Tenant": "kumamoto"})
    assert r.status_code == 201
    assert (await client.get(PATH)).status_code == 404
    r = await client.get(PATH, headers={"NGSILD-Tenant": "kumamoto"})
    assert r.status_code == 200
    assert r.headers["NGSILD-Tenant"] == "kumamoto"


# The short path against the full stack, header for header and byte for byte.

@pytest.fixture
async def pair(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """A client of the app and one of the same app without FastRetrieve (same state)."""
    app = create_app(settings)
    inner: Any = app
    while not isinstance(inner, Starlette):  # under the path normalizer and the metrics
        inner = inner.app
    base = "http://broker/ngsi-ld/v1/"
    async with _lifespan(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=base
    ) as fast, httpx.AsyncClient(
        transport=httpx.ASGITransport(app=PathNormalizer(inner)), base_url=base
    ) as full:
        assert (await fast.post("entities", json=LAMP)).status_code == 201
        r = await fast.post("entities", json=LAMP, headers={"NGSILD-Tenant": "kumamoto"})
        assert r.status_code == 201
        yield fast, full


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which way each retrieve went: "plain" or "handler" (none: the full stack)."""
    seen: list[str] = []
    for way in ("plain", "handler"):
        original = getattr(FastRetrieve, way)

        async def spy(self: FastRetrieve, *args: Any, _original: Any = original,
                      _way: str = way) -> None:
            seen.append(_way)
            await _original(self, *args)

        monkeypatch.setattr(FastRetrieve, way, spy)
    return seen


async def _same(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient], path: str,
    headers: list[tuple[str, str]],
) -> httpx.Response:
    fast, full = pair
    r = await fast.get(path, headers=headers)
    expected = await full.get(path, headers=headers)
    assert r.status_code == expected.status_code
    assert r.headers.raw == expected.headers.raw
    assert r.content == expected.content
    return r


LINK_REL = 'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'


@pytest.mark.parametrize("headers", [
    [],
    [("Accept", "*/*")],
    [("Accept", "application/json")],
    [("Accept", "application/ld+json")],
    [("Accept", "application/geo+json")],
    [("Accept", "application/json;q=0.5, application/ld+json")],
    [("Accept", "application/ld+json"), ("Accept", "application/json")],  # the first counts
    [("NGSILD-Tenant", "kumamoto")],
    [("NGSILD-Tenant", "kumamoto"), ("Accept", "application/ld+json")],
    [("Link", f"<{CORE}>; {LINK_REL}")],
    [("User-Agent", "dashboard"), ("X-Request-Id", "42")],
])
async def test_the_plain_way_answers_as_the_full_stack(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient], answered: list[str],
    headers: list[tuple[str, str]],
) -> None:
    r = await _same(pair, PATH, headers)
    assert r.status_code == 200
    assert answered == ["plain"]


async def test_a_custom_context_compacts_the_same_way(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient], answered: list[str],
) -> None:
    fast, _ = pair
    ctx = {"@context": {"colour": "urn:ngsi-ld:attributes:colour"}}
    r = await fast.post("jsonldContexts", json=ctx)
    assert r.status_code == 201
    url = "http://broker" + r.headers["location"]
    for accept in ("application/json", "application/ld+json"):
        answered.clear()
        link = [("Link", f'<{url}>; rel="http://www.w3.org/ns/json-ld#context"'),
                ("Accept", accept)]
        r = await _same(pair, PATH, link)
        assert r.status_code == 200
        assert answered == ["plain"]


@pytest.mark.parametrize(("path", "headers", "status", "way"), [
    (PATH, [("Prefer", "ngsi-ld=1.7")], 200, ["handler"]),
    (PATH, [("Accept", "application/geo+json"), ("Prefer", "body=json")], 200, ["handler"]),
    (PATH + "?options=keyValues", [], 200, []),
    (PATH + "?attrs=colour&format=concise", [("Accept", "application/ld+json")], 200, []),
    ("entities/urn:ngsi-ld:Lamp:nowhere", [], 404, ["plain"]),
    ("entities/urn:ngsi-ld:Lamp:nowhere", [("Accept", "application/ld+json")], 404, ["plain"]),
    ("entities/not-a-uri", [], 400, ["plain"]),
    (PATH, [("Accept", "text/html")], 406, ["plain"]),
    (PATH, [("NGSILD-Tenant", "bad tenant!")], 400, ["plain"]),
    (PATH, [("NGSILD-Tenant", "nowhere")], 404, ["plain"]),
    (PATH, [("Link", "no angle brackets")], 400, ["plain"]),
    (PATH, [("Link", f"<not-a-url>; {LINK_REL}")], 400, ["plain"]),
    (PATH, [("Link", "no angle brackets"), ("Prefer", "ngsi-ld=1.7")], 400, ["handler"]),
    ("entities/urn:ngsi-ld:Lamp:nowhere", [("Prefer", "ngsi-ld=1.7")], 404, ["handler"]),
    (PATH, [("Link", f"<{CORE}>; {LINK_REL}"), ("Prefer", "ngsi-ld=1.8")], 200, ["handler"]),
])
async def test_the_rest_and_errors_get_the_full_stacks_answer(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient], answered: list[str],
    path: str, headers: list[tuple[str, str]], status: int, way: list[str],
) -> None:
    r = await _same(pair, path, headers)
    assert r.status_code == status
    assert answered == way


async def test_an_entity_map_header_takes_the_handler(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient], answered: list[str],
) -> None:
    fast, _ = pair
    r = await fast.get(PATH, headers={"NGSILD-EntityMap": "urn:ngsi-ld:entitymap:gone"})
    assert r.status_code == 200
    assert r.headers["NGSILD-EntityMap"].startswith("/ngsi-ld/v1/entityMaps/")
    assert answered == ["handler"]


def test_plain_options_are_those_of_no_parameters() -> None:
    assert PLAIN_OPTIONS == RenderOptions()
