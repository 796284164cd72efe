"""Errors about @contexts tell the truth: the client's mistakes are 400 in our words, an
unreachable @context is 504 and waited for once (then remembered a while), a fault of
ours is a 500 that says nothing of it and is logged with its traceback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from pyld.jsonld import JsonLdProcessor

from tests.conftest import _lifespan
from tests.integration.test_context_fetch import ContextServer
from urbanos.http.app import create_app
from urbanos.settings import Settings

ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
EID = "urn:ngsi-ld:Lamp:1"
LAMP = {"id": EID, "type": "Lamp", "colour": {"type": "Property", "value": "red"}}

Broker = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def _link(url: str) -> dict[str, str]:
    return {"Link": f'<{url}>; rel="http://www.w3.org/ns/json-ld#context"'}


@pytest.fixture(scope="module")
def server() -> Iterator[ContextServer]:
    with ContextServer() as srv:
        yield srv


@pytest.fixture
def broker() -> Broker:
    """A broker on the memory store (these answers do not depend on the store)."""

    @asynccontextmanager
    async def start(**settings: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(Settings(store="memory://", **settings))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with _lifespan(app), httpx.AsyncClient(
            transport=transport, base_url="http://broker/ngsi-ld/v1/"
        ) as client:
            assert (await client.post("entities", json=LAMP)).status_code == 201
            yield client

    return start


async def test_an_unreachable_context_is_fetched_once_then_remembered(
    broker: Broker, server: ContextServer
) -> None:
    url = server.url("/unreachable-1.jsonld")  # the server answers 404
    async with broker(context_failure_ttl=3600.0) as client:
        r = await client.get(f"entities/{EID}", headers=_link(url))
        assert r.status_code == 504 and r.json()["type"] == ERRORS + "LdContextNotAvailable"
        assert url in r.json()["detail"]
        assert server.hits["/unreachable-1.jsonld"] == 1  # one request, one fetch
        for path in (f"entities/{EID}", f"entities/{EID}?options=keyValues", "entities?type=Lamp"):
            r = await client.get(path, headers=_link(url))
            assert r.status_code == 504 and url in r.json()["detail"]
        r = await client.post("entities", json={**LAMP, "id": "urn:ngsi-ld:Lamp:2"},
                              headers=_link(url))
        assert r.status_code == 504
        assert server.hits["/unreachable-1.jsonld"] == 1  # remembered: not fetched again
        assert (await client.get("entities/urn:ngsi-ld:Lamp:2")).status_code == 404


async def test_failures_are_not_remembered_when_the_ttl_is_zero(
    broker: Broker, server: ContextServer
) -> None:
    url = server.url("/unreachable-2.jsonld")
    async with broker(context_failure_ttl=0.0) as client:
        for _ in range(2):
            r = await client.get(f"entities/{EID}", headers=_link(url))
            assert r.status_code == 504
        assert server.hits["/unreachable-2.jsonld"] == 2


@pytest.mark.parametrize(("context", "words"), [
    ({"colour": {"@id": "urn:c", "@type": 5}}, "a term's @type must be"),
    ({"@version": 2}, "@version must be 1.1"),
    ({"colour": {"@id": ["urn:c"]}}, "a term does not map to an IRI (term 'colour'"),
])
async def test_a_broken_json_ld_rule_is_400_in_our_words(
    broker: Broker, context: Any, words: str
) -> None:
    async with broker() as client:
        r = await client.post(
            "entities", content=orjson.dumps({**LAMP, "id": "urn:ngsi-ld:Lamp:3", "@context": context}),
            headers={"Content-Type": "application/ld+json"},
        )
        assert r.status_code == 400 and r.json()["type"] == ERRORS + "BadRequestData"
        assert words in r.json()["detail"]
        assert "JSON-LD syntax" not in r.json()["detail"]  # pyld's own wording


class _Fault(Exception):
    """Stands for a bug in pyld or in the broker."""


async def test_a_fault_is_a_logged_500_that_says_nothing_of_it(
    broker: Broker, server: ContextServer, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = server.url("/ctx.jsonld")
    process = JsonLdProcessor.process_context

    def broken(self: JsonLdProcessor, active: Any, local: Any, options: Any) -> Any:
        if url in repr(local):
            raise _Fault("secret internals")
        return process(self, active, local, options)

    monkeypatch.setattr(JsonLdProcessor, "process_context", broken)
    async with broker() as client:
        with caplog.at_level(logging.ERROR, logger="urbanos.http"):
            for request in (
                client.build_request("GET", f"entities/{EID}", headers=_link(url)),
                client.build_request("GET", "entities?type=Lamp", headers=_link(url)),
                client.build_request("POST", "entities", json={**LAMP, "id": "urn:x:4"},
                                     headers=_link(url)),
            ):
                caplog.clear()
                r = await client.send(request)
                assert r.status_code == 500 and r.json()["type"] == ERRORS + "InternalError"
                assert "secret" not in r.text and "_Fault" not in r.text
                [record] = [x for x in caplog.records if x.exc_info]
                assert record.exc_info is not None and record.exc_info[0] is _Fault
