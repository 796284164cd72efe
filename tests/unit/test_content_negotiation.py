"""Accept/Prefer negotiation (clauses 6.3.4, 6.3.6) and the source identity helpers, in isolation."""

from __future__ import annotations

import re

import orjson
import pytest

from urbanos.core.jsonld import core_term_map
from urbanos.errors import NotAcceptable
from urbanos.http.endpoints.info import iso_duration, source_alias
from urbanos.http.negotiation import (
    GEOJSON_MT,
    JSON_MT,
    JSONLD_MT,
    RequestContext,
    choose_accept,
    prefers_json_body,
)
from urbanos.http.respond import json_response

ALL = (JSON_MT, JSONLD_MT, GEOJSON_MT)
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"


@pytest.mark.parametrize(
    ("header", "offered", "expected"),
    [
        (None, ALL, JSON_MT),  # no Accept header: JSON
        ("", ALL, JSON_MT),
        ("*/*", ALL, JSON_MT),
        ("application/*", ALL, JSON_MT),
        # equal weights: the clause's list order decides, not the header's
        ("application/ld+json, application/json", ALL, JSON_MT),
        ("application/geo+json, application/json", ALL, JSON_MT),
        ("application/geo+json, application/ld+json", ALL, JSONLD_MT),
        # weights decide before list order
        ("application/json;q=0.1, application/ld+json;q=0.9", ALL, JSONLD_MT),
        ("application/geo+json;q=1, application/json;q=0.5", ALL, GEOJSON_MT),
        # q=0 refuses a type, and a less specific range cannot bring it back
        ("application/json;q=0, */*", ALL, JSONLD_MT),
        ("application/json;q=0, application/ld+json", ALL, JSONLD_MT),
        ("*/*;q=0.9, application/ld+json;q=0.8", ALL, JSON_MT),
        ("application/*;q=0.2, */*;q=0.9, application/ld+json", ALL, JSONLD_MT),
        # an unparseable or out-of-range weight is ignored, not ranked
        ("application/ld+json;q=notanumber", ALL, JSONLD_MT),
        ("application/ld+json;q=2", ALL, JSONLD_MT),
        # media type parameters and case do not hide a type
        ('Application/LD+JSON; profile="http://www.w3.org/ns/json-ld#compacted"', ALL, JSONLD_MT),
        # a type not offered is skipped when another named type is
        ("application/geo+json, application/json", (JSON_MT, JSONLD_MT), JSON_MT),
        ("application/geo+json;q=0.9, application/ld+json;q=0.1", (JSON_MT, JSONLD_MT), JSONLD_MT),
        # malformed ranges are skipped, the rest still count
        ("garbage, */json, application/json", ALL, JSON_MT),
    ],
)
def test_choose_accept(header: str | None, offered: tuple[str, ...], expected: str) -> None:
    assert choose_accept(header, offered) == expected


@pytest.mark.parametrize(
    ("header", "offered"),
    [
        ("application/xml", ALL),
        ("text/*", ALL),
        ("application/geo+json", (JSON_MT, JSONLD_MT)),
        ("application/json;q=0, application/ld+json;q=0", (JSON_MT, JSONLD_MT)),
        ("*/*;q=0", ALL),
        ("garbage", ALL),
    ],
)
def test_choose_accept_not_acceptable(header: str, offered: tuple[str, ...]) -> None:
    with pytest.raises(NotAcceptable):
        choose_accept(header, offered)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("body=json", True),
        ("BODY=JSON", True),
        ('body="json"', True),
        ("return=minimal, body=json", True),
        ("body=json; foo=bar", True),
        ("body=ld+json", False),
        ("respond-async", False),
    ],
)
def test_prefers_json_body(header: str | None, expected: bool) -> None:
    assert prefers_json_body(header) is expected


def _ctx(accept: str, *, prefer_json_body: bool = False) -> RequestContext:
    return RequestContext(
        tenant="", context=None, terms=core_term_map(), accept=accept,
        prefer_json_body=prefer_json_body,
    )


def test_json_response_places_the_context() -> None:
    """JSON: Link header; JSON-LD and GeoJSON: in the body; GeoJSON + body=json: Link."""
    feature = {"type": "Feature", "id": "urn:a:b"}
    r = json_response(_ctx(JSON_MT), {"id": "urn:a:b"}, link_url=CORE)
    assert CORE in r.headers["link"] and b"@context" not in r.body
    r = json_response(_ctx(JSONLD_MT), [{"id": "urn:a:b"}], link_url=CORE)
    assert "link" not in r.headers
    assert orjson.loads(r.body) == [{"id": "urn:a:b", "@context": CORE}]
    r = json_response(_ctx(GEOJSON_MT), feature, link_url=CORE)
    assert "link" not in r.headers and orjson.loads(r.body)["@context"] == CORE
    assert r.headers["content-type"].startswith(GEOJSON_MT)
    r = json_response(_ctx(GEOJSON_MT, prefer_json_body=True), feature, link_url=CORE)
    assert CORE in r.headers["link"] and b"@context" not in r.body


def test_iso_duration() -> None:
    pattern = re.compile(r"^P(?!$)(\d+D)?(T(?!$)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")
    assert iso_duration(0) == "P0DT0H0M0.000S"
    assert iso_duration(90061.5) == "P1DT1H1M1.500S"
    for seconds in (0, 0.0004, 59.9996, 3600, 10**7):
        assert pattern.match(iso_duration(seconds))


def test_source_alias_is_a_stable_token_per_tenant() -> None:
    token = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token
    default = source_alias("http://x:1026", "", host="h")
    a = source_alias("http://x:1026", "city/a:1", host="h")
    assert token.match(default) and token.match(a)
    assert a != default != source_alias("http://x:1026", "", host="other")
    assert a == source_alias("http://x:1026", "city/a:1", host="h")
    assert a != source_alias("http://x:1026", "city/b", host="h")
