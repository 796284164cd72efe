"""/jsonldContexts over HTTP (clause 5.13, binding 6.29-6.30), and scoped contexts (5.5.7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from tests.conftest import _lifespan
from urbanos.http.app import create_app
from urbanos.settings import Settings

LD = "application/ld+json"
ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
CTX = {"@context": {"A1": "urn:ngsi-ld:attributes:A1", "A2": "urn:ngsi-ld:attributes:A2"}}


def _link(url: str) -> dict[str, str]:
    return {"Link": f'<{url}>; rel="http://www.w3.org/ns/json-ld#context"'}


async def _add(client: httpx.AsyncClient, body: object = CTX, **headers: str) -> str:
    """Add a @context; its path relative to the client's base URL (httpx keeps the base)."""
    r = await client.post("jsonldContexts", json=body, headers=headers)
    assert r.status_code == 201, r.text
    assert r.content == b""
    location = r.headers["location"]
    # broker-relative like every other Location, so clients can join it to the base URL
    assert location.startswith("/ngsi-ld/v1/jsonldContexts/urn:ngsi-ld:jsonldContext:")
    return location.removeprefix("/ngsi-ld/v1/")


async def test_add_serve_and_delete_a_hosted_context(client: httpx.AsyncClient) -> None:
    location = await _add(client, {**CTX, "discarded": True})
    r = await client.get(location)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == CTX
    local_id = location.rsplit("/", 1)[1]
    r = await client.get(f"jsonldContexts/{local_id}", params={"details": "true"})
    details = r.json()
    assert details["kind"] == "Hosted" and details["localId"] == local_id
    assert details["URL"].startswith("http") and details["URL"].endswith(location)
    assert set(details) <= {"URL", "localId", "kind", "createdAt", "lastUsage",
                            "numberOfHits", "extraInfo", "expiresAt"}
    r = await client.get("jsonldContexts", params={"kind": "Hosted"})
    assert r.json() == [details["URL"]]
    r = await client.delete(location)
    assert r.status_code == 204
    r = await client.get(location)
    assert r.status_code == 404 and r.json()["type"] == ERRORS + "ResourceNotFound"


async def test_hits_count_uses_and_lookups(client: httpx.AsyncClient) -> None:
    """Details report the hits found so far; each lookup and each use adds one."""
    location = await _add(client)
    r = await client.get(location, params={"details": "true"})
    assert r.json()["numberOfHits"] == 0 and "lastUsage" not in r.json()
    url = r.json()["URL"]
    entity = {"id": "urn:ngsi-ld:T:1", "type": "T", "A1": {"type": "Property", "value": 1}}
    r = await client.post("entities", json=entity, headers=_link(url))
    assert r.status_code == 201, r.text
    r = await client.get(location, params={"details": "true"})
    assert r.json()["numberOfHits"] == 2 and "lastUsage" in r.json()
    r = await client.get("entities/urn:ngsi-ld:T:1", headers=_link(url))
    assert "A1" in r.json()
    r = await client.get("jsonldContexts", params={"details": "true", "kind": "Hosted"})
    assert r.json()[0]["numberOfHits"] == 4  # listing is not a lookup


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("jsonldContexts", {"details": "other"}),
        ("jsonldContexts", {"details": "other", "kind": "Hosted"}),
        ("jsonldContexts", {"kind": "other"}),
        ("jsonldContexts", {"details": "true", "kind": "cached"}),
        ("jsonldContexts/urn:x", {"details": "yes"}),
    ],
)
async def test_bad_flag_and_kind_values(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    r = await client.get(path, params=params)
    assert r.status_code == 400
    assert r.json()["type"] == ERRORS + "BadRequestData"


async def test_delete_errors(client: httpx.AsyncClient) -> None:
    location = await _add(client)
    cases = [
        ("jsonldContexts/urn:no:such", {"reload": "xxx"}, 400, "BadRequestData"),
        ("jsonldContexts/urn:no:such", {}, 404, "ResourceNotFound"),
        ("jsonldContexts/urn:no:such", {"reload": "false"}, 404, "ResourceNotFound"),
        (location, {"reload": "true"}, 400, "BadRequestData"),  # only Cached reloads
        ("jsonldContexts/" + CORE.replace("/", "%2F"), {}, 400, "BadRequestData"),
    ]
    for path, params, status, error in cases:
        r = await client.delete(path, params=params)
        assert (r.status_code, r.json()["type"]) == (status, ERRORS + error), path
    r = await client.delete("jsonldContexts/" + CORE.replace("/", "%2F"),
                            params={"reload": "true"})
    assert r.status_code == 204  # built in: nothing to download again
    assert (await client.get(location)).status_code == 200


async def test_the_core_context_is_described_not_served(client: httpx.AsyncClient) -> None:
    quoted = CORE.replace(":", "%3A").replace("/", "%2F")
    r = await client.get(f"jsonldContexts/{quoted}")
    assert r.status_code == 422 and r.json()["type"] == ERRORS + "OperationNotSupported"
    r = await client.get(f"jsonldContexts/{quoted}", params={"details": "true"})
    assert r.json()["kind"] == "Cached" and r.json()["URL"] == CORE
    r = await client.get("jsonldContexts", params={"kind": "Cached"})
    assert r.json() == [CORE]


@pytest.mark.parametrize(
    "body",
    [
        {"A1": "urn:ngsi-ld:attributes:A1"},
        {"@context": 42},
        {"@context": True},
        {"@context": ["https://example.org/ctx.jsonld", 7]},
    ],
)
async def test_add_refuses_what_is_not_a_context(client: httpx.AsyncClient, body: object) -> None:
    r = await client.post("jsonldContexts", json=body)
    assert r.status_code == 400 and "location" not in r.headers
    assert (await client.get("jsonldContexts", params={"kind": "Hosted"})).json() == []


async def test_hosted_contexts_belong_to_their_tenant(client: httpx.AsyncClient) -> None:
    location = await _add(client, **{"NGSILD-Tenant": "a"})
    assert (await client.get(location, headers={"NGSILD-Tenant": "b"})).status_code == 404
    assert (await client.delete(location, headers={"NGSILD-Tenant": "b"})).status_code == 404
    assert (await client.get(location, headers={"NGSILD-Tenant": "a"})).status_code == 200
    assert (await client.get("jsonldContexts", params={"kind": "Hosted"})).json() == []


async def test_a_json_answer_to_an_inline_context_links_an_implicit_entry(
    client: httpx.AsyncClient,
) -> None:
    context = {"Zone": "urn:example:Zone"}
    query = {"type": "Query", "entities": [{"type": "Zone"}], "@context": context}
    r = await client.post("entityOperations/query", json=query,
                          headers={"Content-Type": LD, "Accept": "application/json"})
    assert r.status_code == 200, r.text
    url = r.headers["link"].split(">")[0].lstrip("<")
    r = await client.get("jsonldContexts", params={"kind": "ImplicitlyCreated"})
    assert r.json() == [url]
    local_id = url.rsplit("/", 1)[1]
    assert (await client.get(f"jsonldContexts/{local_id}")).json() == {"@context": context}


async def test_scoped_user_contexts_are_refused(client: httpx.AsyncClient) -> None:
    """Clause 5.5.7: a term definition with its own @context could reshape NGSI-LD terms."""
    scoped = {"Vehicle": {"@id": "https://example.org/Vehicle",
                          "@context": {"speed": "https://example.org/hidden-speed"}}}
    entity = {"id": "urn:ngsi-ld:Vehicle:S1", "type": "Vehicle", "@context": [scoped]}
    r = await client.post("entities", json=entity, headers={"Content-Type": LD})
    assert r.status_code == 400 and r.json()["type"] == ERRORS + "BadRequestData"
    assert (await client.get("entities/urn:ngsi-ld:Vehicle:S1")).status_code == 404
    # hosting it is allowed (plain JSON-LD), using it is not
    location = await _add(client, {"@context": scoped})
    url = (await client.get(location, params={"details": "true"})).json()["URL"]
    r = await client.post("entities", json={"id": "urn:ngsi-ld:Vehicle:S2", "type": "Vehicle"},
                          headers=_link(url))
    assert r.status_code == 400 and "scoped" in r.json()["detail"]


@asynccontextmanager
async def _broker(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """One run of the app (start, serve, stop), like one run of the broker process."""
    app = create_app(settings)
    async with _lifespan(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://broker/ngsi-ld/v1/"
    ) as c:
        yield c


async def test_the_registry_outlives_a_restart(settings: Settings, store_url: str) -> None:
    """Hosted and ImplicitlyCreated entries, their counts and deletions are stored: URLs
    handed out before a restart keep working after it."""
    if store_url.startswith("memory"):
        pytest.skip("the memory store keeps nothing across runs")
    entity = {"id": "urn:ngsi-ld:T:1", "type": "T", "A1": {"type": "Property", "value": 1}}
    async with _broker(settings) as client:
        location = await _add(client)
        url = (await client.get(location, params={"details": "true"})).json()["URL"]
        assert (await client.post("entities", json=entity, headers=_link(url))).status_code == 201
        query = {"type": "Query", "entities": [{"type": "Zone"}],
                 "@context": {"Zone": "urn:example:Zone"}}
        r = await client.post("entityOperations/query", json=query,
                              headers={"Content-Type": LD, "Accept": "application/json"})
        implicit = r.headers["link"].split(">")[0].lstrip("<").rsplit("/", 1)[1]
        gone = await _add(client, {"@context": {"G": "urn:g"}})
        assert (await client.delete(gone)).status_code == 204
    async with _broker(settings) as client:
        assert (await client.get(location)).json() == CTX
        details = (await client.get(location, params={"details": "true"})).json()
        # two uses before the restart (details, the entity), one after (served)
        assert details["URL"] == url and details["numberOfHits"] == 3
        assert (await client.get("jsonldContexts", params={"kind": "Hosted"})).json() == [url]
        assert (await client.get(gone)).status_code == 404
        served = await client.get(f"jsonldContexts/{implicit}")
        assert served.json() == {"@context": {"Zone": "urn:example:Zone"}}
        r = await client.get("entities/urn:ngsi-ld:T:1", headers=_link(url))
        assert r.json()["A1"]["value"] == 1  # the stored document still expands the terms
