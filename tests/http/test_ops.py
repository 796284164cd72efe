"""Source identity (clause 5.15.1), router errors as ProblemDetails, and no request gives a 500."""

from __future__ import annotations

import re

import httpx
import pytest

from urbanos.http.routes import ROUTES

DURATION = re.compile(r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?!$)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


async def test_source_identity(client: httpx.AsyncClient) -> None:
    r = await client.get("info/sourceIdentity")
    assert r.status_code == 200
    body = r.json()
    assert body["type"] == "ContextSourceIdentity"
    assert body["id"].startswith("urn:ngsi-ld:ContextSourceIdentity:")
    assert body["contextSourceAlias"]
    assert DURATION.match(body["contextSourceUptime"])
    assert DATETIME.match(body["contextSourceTimeAt"])
    assert "ngsi-ld-core-context" in r.headers["link"]
    r = await client.get("info/sourceIdentity", headers={"Accept": "application/ld+json"})
    assert "ngsi-ld-core-context" in r.json()["@context"]


async def test_source_alias_names_the_tenant(client: httpx.AsyncClient) -> None:
    """Each tenant has its own stable alias; an unknown tenant still has an identity."""

    async def alias(tenant: str | None) -> str:
        headers = {"NGSILD-Tenant": tenant} if tenant else {}
        r = await client.get("info/sourceIdentity", headers=headers)
        assert r.status_code == 200
        if tenant:
            assert r.headers["NGSILD-Tenant"] == tenant
        return r.json()["contextSourceAlias"]  # type: ignore[no-any-return]

    default, a, b = await alias(None), await alias("tenant-a"), await alias("tenant-b")
    assert len({default, a, b}) == 3
    assert await alias("tenant-a") == a


async def test_unknown_path_is_a_problem(client: httpx.AsyncClient) -> None:
    r = await client.get("nowhere", headers={"NGSILD-Tenant": "t1"})
    assert r.status_code == 404
    problem = r.json()
    assert problem["type"] == "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"
    assert problem["title"] and problem["detail"]
    assert r.headers["NGSILD-Tenant"] == "t1"


async def test_method_not_allowed_is_a_problem(client: httpx.AsyncClient) -> None:
    r = await client.put("types")
    assert r.status_code == 405
    assert "GET" in r.headers["allow"]
    problem = r.json()
    assert problem["status"] == 405 and problem["title"] and problem["detail"]
    assert problem["type"] == "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "entities//attrs", 400),  # an empty entity id is not a URI
        ("PATCH", "entities//attrs/level", 400),
        ("DELETE", "entities//attrs/level", 400),
        ("PUT", "entities/", 400),  # Replace/Merge Entity without the id in the path
        ("PATCH", "entities/", 400),
        ("DELETE", "entities/urn:a:b/attrs/", 405),  # the attrs collection has no DELETE
    ],
)
async def test_empty_segments_and_collections(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    r = await client.request(method, path, json={"level": 1})
    assert r.status_code == status
    problem = r.json()
    assert problem["title"] and problem["detail"]
    if status == 400:
        assert problem["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"


# --- garbage to every route: any answer but a 5xx from a crash, and errors are ProblemDetails

PATH_VALUES = ["urn:ngsi-ld:T:1", "%00", "urn:x:%FF", "x" * 600, "https%3A%2F%2Fexample.org%2FT%23a"]
QUERIES = ["?a=b", "?type=%00", "?q=((((", "?limit=abc", "?options=foo", "?details=maybe",
           "?attrs=", "?type=T&georel=near;maxDistance==1&geometry=Point&coordinates=[x]",
           "?type=T&count=true&limit=0", "?id=urn:a:b&pick=x,,", "?type=T&q=a==%22x",
           "?type=T&limit=99999999999999999999", "?type=(A;B)|C", "?idPattern=(((",
           "?type=T&scopeQ=/a/#", "?reload=maybe", "?kind=Nope"]
HEADERS = [
    {"Accept": "garbage;;q=x,,*/"},
    {"Link": '<>; rel="http://www.w3.org/ns/json-ld#context"'},
    {"Link": "garbage"},
    {"NGSILD-Tenant": "bad tenant!"},
    {"NGSILD-Tenant": "nosuchtenant"},
    {"Content-Type": "text/plain"},
    {"Content-Type": "application/merge-patch+json"},
    {"Accept": "application/geo+json", "Prefer": "body=json;;,"},
]
BODIES = [b"", b"{", b"null", b"[]", b"[1,2]", b'"x"', b"{}", b'{"id":1}', b'{"@context": 5}',
          b"[" * 40 + b"]" * 40, b"\xff\xfe", b'{"id":"urn:a:b","type":"T","x":{"type":"Property"}}',
          b'{"id":"urn:a:b","type":"T","@context":{"@vocab":5}}',
          b'[{"id":"urn:a:b","type":"T"},{"id":"urn:a:b"}]',
          b'{"id":"urn:a:b","type":"T","location":{"type":"GeoProperty","value":{"type":"Point","coordinates":["a"]}}}',
          b'{"type":"Query","q":"((("}', b'{"x":{"type":"Relationship","object":5}}',
          b'{"value": null}', b'{"@context":[],"id":"urn:a:b","type":"T"}']


def _requests() -> list[tuple[str, str, dict[str, str], bytes | None]]:
    """(method, path, headers, body) for every route, method and kind of garbage."""
    out: list[tuple[str, str, dict[str, str], bytes | None]] = []
    ok_body = b'{"id":"urn:a:b","type":"T"}'
    for route in ROUTES:
        names = re.findall(r"\{(\w+)(?::\w+)?\}", route.path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            has_body = method in ("POST", "PATCH", "PUT")
            for value in PATH_VALUES if names else [""]:
                path = re.sub(r"\{\w+(?::\w+)?\}", value, route.path)
                for query in QUERIES:
                    out.append((method, path + query, {}, ok_body if has_body else None))
                for headers in HEADERS:
                    out.append((method, path, headers, ok_body if has_body else None))
                if has_body:
                    for body in BODIES:
                        out.append((method, path, {"Content-Type": "application/ld+json"}, body))
                        out.append((method, path, {}, body))
    return out


async def test_no_request_crashes_the_broker(client: httpx.AsyncClient) -> None:
    failures: list[str] = []
    for method, path, headers, body in _requests():
        url = "http://broker" + path
        try:
            r = await client.request(
                method, url, content=body,
                headers={"Content-Type": "application/json", **headers},
            )
        except Exception as exc:  # noqa: BLE001 - an unhandled error escapes the app
            failures.append(f"{method} {path} {headers} {body!r:.60}: {exc!r:.120}")
            continue
        if r.status_code >= 500 and r.status_code not in (503, 504):
            failures.append(f"{method} {path} {headers} {body!r:.60}: {r.status_code}")
        elif r.status_code >= 400 and r.status_code != 411:
            problem = r.json()
            if not {"type", "title", "detail"} <= problem.keys():
                failures.append(f"{method} {path}: not a ProblemDetails: {problem}")
    assert not failures, "\n".join(failures[:20])


async def test_a_malformed_context_url_is_bad_request(client: httpx.AsyncClient) -> None:
    body = b'{"@context":["http://[::1"],"id":"urn:a:b","type":"T"}'
    r = await client.post("entities", content=body, headers={"Content-Type": "application/ld+json"})
    assert r.status_code == 400
