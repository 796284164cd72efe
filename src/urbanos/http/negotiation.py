"""Media types, bodies, @context and tenants of a request (clauses 6.3.4 - 6.3.6, 6.3.14).

Endpoints call ``read_body`` and ``request_context`` first, so every precondition
(Content-Length, Content-Type, size, JSON validity, Link header, NGSILD-Tenant, Accept) is
checked in one place, in the order the spec gives, before any state is touched.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request

from urbanos.errors import (
    BadRequestData,
    InvalidRequest,
    LengthRequired,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from urbanos.services.guard import OPEN_GUARD, Guard
from urbanos.services.stores import DEFAULT_TENANT
from urbanos.types import JSON, Terms

JSON_MT = "application/json"
JSONLD_MT = "application/ld+json"
GEOJSON_MT = "application/geo+json"
MERGE_PATCH_MT = "application/merge-patch+json"
CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"

_LINK = re.compile(r'^\s*<([^>]*)>\s*((?:;\s*[A-Za-z]+\s*=\s*(?:"[^"]*"|[^;,\s]*)\s*)*)$')
_LINK_PARAM = re.compile(r';\s*([A-Za-z]+)\s*=\s*("[^"]*"|[^;,\s]*)')
_TENANT = re.compile(r"^[A-Za-z0-9_\-.:/@]{1,256}$")
_QVALUE = re.compile(r"^(0(\.\d{0,3})?|1(\.0{0,3})?)$")


@dataclass(slots=True)
class RequestContext:
    """What every handler needs to know about the caller beyond the path."""

    tenant: str
    context: JSON  # the request's @context value (URL, object or list), None = core only
    terms: Terms
    accept: str
    prefer_json_body: bool = False  # Prefer: body=json (clause 6.3.6), for GeoJSON answers
    guard: Guard = OPEN_GUARD  # the caller's rights in the tenant (services.guard)


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


async def read_body(
    request: Request, max_bytes: int, max_depth: int, *, merge_patch: bool = False
) -> tuple[JSON, str]:
    """The parsed JSON body and its media type, after the spec's preconditions.

    Every PATCH also accepts application/merge-patch+json (clause 6.3.4), which the
    caller then reads like application/json: the @context comes from the Link header.
    """
    if "content-length" not in request.headers:
        raise LengthRequired("Content-Length is required")
    ctype = media_type(request.headers.get("content-type"))
    allowed = {JSON_MT, JSONLD_MT}
    if merge_patch or request.method == "PATCH":
        allowed.add(MERGE_PATCH_MT)
    if ctype not in allowed:
        raise UnsupportedMediaType(
            f"Content-Type {ctype or '(none)'} is not supported; use {' or '.join(sorted(allowed))}"
        )
    try:
        declared = int(request.headers["content-length"])
    except ValueError as exc:
        raise InvalidRequest("Content-Length is not a number") from exc
    if declared < 0:
        raise InvalidRequest("Content-Length is negative")
    if declared > max_bytes:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {max_bytes}")
    raw = bytearray()
    async for chunk in request.stream():
        raw.extend(chunk)
        if len(raw) > max_bytes:
            raise PayloadTooLarge(f"body exceeds the limit of {max_bytes} bytes")
    return parse_json(bytes(raw), max_depth), ctype


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidRequest(f"duplicate key {key!r} in JSON object")
        out[key] = value
    return out



def parse_json(raw: bytes, max_depth: int) -> JSON:
    """Strict JSON: no duplicate keys, no NaN/Infinity, nesting at most ``max_depth``.

    orjson parses (and refuses NaN, Infinity and runaway nesting) at C speed; a walk of
    the containers measures depth and counts members, and the members are compared with the
    colons outside strings in the raw text: fewer members means a key came twice, and
    only then is the body parsed again, slowly, to name it.
    """
    if not raw.strip():
        raise InvalidRequest("the request body is empty")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from exc
    members = _members(value, 1, max_depth) if type(value) in (dict, list) else 0
    if members != _colons_outside_strings(raw, value, members):
        _name_duplicate(raw)
    return value


_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def _colons_outside_strings(raw: bytes, value: JSON, members: int) -> int:
    """The colons of ``raw`` that separate a key from its value.

    Without a backslash in the body, every string reads byte for byte the same in the body
    and in orjson's compact output of ``value``, whose other colons are its ``members``: so
    the colons inside strings are counted there, at C speed, instead of cutting the strings
    out of the body with a regular expression.
    """
    if b"\\" not in raw:
        try:
            return raw.count(b":") - (orjson.dumps(value).count(b":") - members)
        except orjson.JSONEncodeError:  # an integer orjson reads but does not write
            pass
    return _STRINGS.sub(b"", raw).count(b":")


def _members(value: dict[str, Any] | list[Any], depth: int, max_depth: int) -> int:
    """Object members in a container; InvalidRequest when nesting exceeds ``max_depth``."""
    if depth > max_depth:
        raise InvalidRequest(f"JSON nesting deeper than {max_depth}")
    items: Iterable[Any] = value.values() if type(value) is dict else value
    count = len(value) if type(value) is dict else 0
    for item in items:
        if type(item) is dict or type(item) is list:
            count += _members(item, depth + 1, max_depth)
    return count


def _name_duplicate(raw: bytes) -> None:
    try:
        json.loads(raw, object_pairs_hook=_no_duplicates)
    except InvalidRequest:
        raise
    except ValueError as exc:  # orjson accepted it, so this should not happen
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from exc
    raise InvalidRequest("duplicate key in JSON object")


def parse_link_context(header: str | None) -> str | None:
    """The @context URL of a Link header (clause 6.3.5); None when there is none."""
    if not header:
        return None
    found = None
    for part in _split_links(header):
        m = _LINK.match(part)
        if not m:
            raise BadRequestData(f"malformed Link header: {part.strip()!r}")
        params = {k.lower(): v.strip('"') for k, v in _LINK_PARAM.findall(m.group(2))}
        if params.get("rel") == CONTEXT_REL:
            if found is not None:
                raise BadRequestData("more than one JSON-LD context Link header")
            found = m.group(1).strip()
    if found is not None and not re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://\S+$", found):
        raise BadRequestData(f"the Link header @context is not a URL: {found!r}")
    return found


def _split_links(header: str) -> Iterable[str]:
    part: list[str] = []
    in_angle = in_quote = False
    for ch in header:
        if ch == "<" and not in_quote:
            in_angle = True
        elif ch == ">" and not in_quote:
            in_angle = False
        elif ch == '"' and not in_angle:
            in_quote = not in_quote
        if ch == "," and not in_angle and not in_quote:
            yield "".join(part)
            part = []
        else:
            part.append(ch)
    if "".join(part).strip():
        yield "".join(part)


def body_context(body: JSON, ctype: str, link_header: str | None) -> JSON:
    """The @context that applies to a body (clause 6.3.5): inline for ld+json, else Link.

    The two ways exclude each other: a JSON-LD Link header with an application/ld+json
    body is BadRequestData, as is an @context member in an application/json body.
    """
    if ctype == JSONLD_MT:
        if parse_link_context(link_header) is not None:
            raise BadRequestData(
                "an application/ld+json request carries its @context in the body, "
                "not in a Link header"
            )
        if isinstance(body, list):
            contexts = [e.get("@context") if isinstance(e, dict) else None for e in body]
            if any(c is None for c in contexts):
                raise BadRequestData("every entity of an application/ld+json batch needs @context")
            return contexts[0] if contexts else None
        if not isinstance(body, dict) or "@context" not in body:
            raise BadRequestData("an application/ld+json body must carry an @context")
        return body["@context"]
    if isinstance(body, dict) and "@context" in body:
        raise BadRequestData("an application/json body must not carry @context; use a Link header")
    if isinstance(body, list) and any(isinstance(e, dict) and "@context" in e for e in body):
        raise BadRequestData("an application/json body must not carry @context; use a Link header")
    return parse_link_context(link_header)


def echo_tenant(request: Request) -> str | None:
    """The NGSILD-Tenant to repeat on a response (clause 6.3.14): the request's, if valid."""
    raw = request.headers.get("ngsild-tenant")
    return raw if raw and _TENANT.match(raw) else None


def tenant_of(request: Request) -> str:
    return tenant_from(request.headers.get("ngsild-tenant"))


def tenant_from(raw: str | None) -> str:
    """The tenant an NGSILD-Tenant header value names; BadRequestData when it is invalid."""
    if raw is None or raw == "":
        return DEFAULT_TENANT
    if not _TENANT.match(raw):
        raise BadRequestData(f"invalid NGSILD-Tenant {raw!r}")
    return raw


def _split_unquoted(header: str, sep: str) -> list[str]:
    """``header`` split on ``sep`` outside double-quoted strings."""
    parts: list[str] = []
    part: list[str] = []
    quoted = False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(part))
            part = []
        else:
            part.append(ch)
    parts.append("".join(part))
    return parts


def _media_ranges(header: str) -> list[tuple[str, str, float]]:
    """(type, subtype, weight) for each well-formed range of an Accept header.

    A weight that is not an RFC 9110 qvalue is ignored (the range keeps weight 1) rather
    than guessed at; a range that is not ``type/subtype`` is skipped.
    """
    ranges: list[tuple[str, str, float]] = []
    for item in _split_unquoted(header, ","):
        fields = _split_unquoted(item, ";")
        mtype, _, subtype = fields[0].strip().lower().partition("/")
        if not mtype or not subtype or "/" in subtype or (mtype == "*" and subtype != "*"):
            continue
        weight = 1.0
        for field in fields[1:]:
            name, _, value = field.partition("=")
            if name.strip().lower() == "q":
                if _QVALUE.match(value.strip()):
                    weight = float(value)
                break  # parameters after q are accept-extensions, not media type parameters
        ranges.append((mtype, subtype, weight))
    return ranges


def _weight(offer: str, ranges: list[tuple[str, str, float]]) -> float:
    """The weight of ``offer``: that of the most specific range matching it (RFC 9110 5.3.2)."""
    mtype, _, subtype = offer.partition("/")
    best, specificity = 0.0, 0
    for rtype, rsub, weight in ranges:
        if (rtype, rsub) == (mtype, subtype):
            level = 3
        elif rtype == mtype and rsub == "*":
            level = 2
        elif rtype == "*":
            level = 1
        else:
            continue
        if level > specificity or (level == specificity and weight > best):
            best, specificity = weight, level
    return best


def choose_accept(header: str | None, offered: tuple[str, ...] = (JSON_MT, JSONLD_MT)) -> str:
    """The media type to answer with (clause 6.3.4); 406 when the Accept header allows none.

    ``offered`` is in the order of the clause's list (JSON, JSON-LD, GeoJSON): weights decide
    first, and among equal weights the earlier entry of the list wins, whatever order the
    client wrote. No Accept header (or an empty one) means JSON.

    Clients send a handful of distinct Accept headers, over and over: the choices are
    remembered (a refusal is not, it raises).
    """
    if header is None:
        return offered[0]
    return _choose_accept(header, offered)


@functools.lru_cache(maxsize=256)
def _choose_accept(header: str, offered: tuple[str, ...]) -> str:
    if not header.strip():
        return offered[0]
    ranges = _media_ranges(header)
    weights = [_weight(mt, ranges) for mt in offered]
    best = max(weights)
    if best <= 0:
        shown = header if len(header) <= 200 else header[:200] + "..."
        raise NotAcceptable(f"the Accept header {shown!r} allows none of {', '.join(offered)}")
    return offered[weights.index(best)]


def prefers_json_body(header: str | None) -> bool:
    """True when a Prefer header (IETF RFC 7240) asks for ``body=json`` (clause 6.3.6).

    With GeoJSON this moves the @context from the body to a Link header.
    """
    if not header:
        return False
    for preference in _split_unquoted(header, ","):
        name, _, value = _split_unquoted(preference, ";")[0].partition("=")
        if name.strip().lower() == "body" and value.strip().strip('"').lower() == "json":
            return True
    return False
