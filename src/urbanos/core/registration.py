"""Context source registrations in and out (clauses 5.2.9, 5.9.2 - 5.9.6, 4.3.6).

``parse_registration`` validates a Create Registration body into the stored *document*;
``patch_registration`` applies an Update Registration fragment to one;
``render_registration`` shows a document with the reader's @context; ``registration_matches``
is the discovery predicate (5.10.2). Invalid content is BadRequestData, whatever member.

As for subscriptions, the document keeps what the registrant gave with entity types and
attribute names expanded to IRIs (``core.registration_info``), ``mode`` and ``operations``
with their defaults filled in (the API shows them), and any member the data type does not
define as a Context Source Property under its expanded name (queried with ``q``/``csf``).
Members starting with ``_`` are internal and never shown: the service puts the creating
request's @context in ``_context`` (forwarded requests and notifications use it). The
read-only counters (``status``, ``timesSent``...) are written by the federation machinery
only, and shown when present.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from urbanos.core.registration_info import (
    WRITE_OPERATIONS,
    check_exclusive,
    check_operations,
    covers,
    expand_operations,
    parse_information,
    render_information,
)
from urbanos.core.subscription_payload import check_expires, key_value_pairs
from urbanos.core.temporal import parse_duration
from urbanos.core.timeutil import parse_datetime
from urbanos.core.validation import check_datetime, check_geometry, check_name, check_scopes, is_uri
from urbanos.errors import BadRequestData
from urbanos.types import JSONObject, Terms

__all__ = [
    "MODES",
    "parse_registration",
    "patch_registration",
    "registration_matches",
    "render_registration",
]

TYPE = "ContextSourceRegistration"
MODES = ("inclusive", "exclusive", "redirect", "auxiliary")
DEFAULTS: dict[str, Any] = {"mode": "inclusive", "operations": ["federationOps"]}
#: written by the broker from the outcome of distributed operations (5.2.9): never input
COUNTERS = frozenset({"status", "timesSent", "timesFailed", "lastSuccess", "lastFailure"})
#: system members a client may send back from a rendered registration: ignored
_SYSTEM = frozenset({"createdAt", "modifiedAt", "deletedAt"})
_MANDATORY = ("information", "endpoint")
_MEMBERS = frozenset({"registrationName", "description", "information", "tenant",
                      "observationInterval", "managementInterval", "location",
                      "observationSpace", "operationSpace", "expiresAt", "endpoint",
                      "contextSourceInfo", "scope", "mode", "operations", "refreshRate",
                      "management"})
_SKIPPED = frozenset({"id", "type", "@context"}) | _SYSTEM
_MANAGEMENT = frozenset({"localOnly", "cacheDuration", "timeout", "cooldown"})
_INTERVAL = frozenset({"startAt", "endAt"})


def _fail(message: str) -> BadRequestData:
    return BadRequestData(message)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(f"{what} must be a non-empty string")
    return value


def _endpoint(value: object) -> str:
    """An absolute http(s) URL with a host: where the source's NGSI-LD API is."""
    uri = _text(value, "endpoint")
    if not is_uri(uri):
        raise _fail(f"endpoint {uri!r} is not an absolute URI")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise _fail(f"endpoint {uri!r} is malformed: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _fail(f"endpoint {uri!r} must be an http or https URL with a host")
    return uri


def _interval(value: object, what: str) -> JSONObject:
    """A TimeInterval (5.2.11): startAt, and an endAt after it when the interval is closed."""
    if not isinstance(value, dict) or "startAt" not in value:
        raise _fail(f"{what} must be an object with startAt")
    extra = sorted(k for k in value if k not in _INTERVAL)
    if extra:
        raise _fail(f"{what}: unknown member(s) {', '.join(extra)}")
    out: JSONObject = {"startAt": check_datetime(value["startAt"], f"{what}.startAt")}
    if "endAt" in value:
        out["endAt"] = check_datetime(value["endAt"], f"{what}.endAt")
        start, end = parse_datetime(out["startAt"]), parse_datetime(out["endAt"])
        if start is None or end is None or end <= start:
            raise _fail(f"{what}: endAt must be later than startAt")
    return out


def _positive(value: object, what: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _fail(f"{what} must be a number greater than 0")
    return value


def _management(value: object) -> JSONObject:
    """RegistrationManagementInfo (5.2.34)."""
    if not isinstance(value, dict):
        raise _fail("management must be an object")
    extra = sorted(k for k in value if k not in _MANAGEMENT)
    if extra:
        raise _fail(f"management: unknown member(s) {', '.join(extra)}")
    out: JSONObject = {}
    if "localOnly" in value:
        if not isinstance(value["localOnly"], bool):
            raise _fail("management.localOnly must be true or false")
        out["localOnly"] = value["localOnly"]
    if "cacheDuration" in value:
        parse_duration(value["cacheDuration"], "management.cacheDuration")
        out["cacheDuration"] = value["cacheDuration"]
    for key in ("timeout", "cooldown"):
        if key in value:
            out[key] = _positive(value[key], f"management.{key}")
    return out


def _property(doc: JSONObject, name: str, value: Any, terms: Terms) -> None:
    """A Context Source Property: any member the data type does not define."""
    iri = terms.expand(check_name(name, "Context Source Property name"))
    if not is_uri(iri):
        raise _fail(f"{name!r} does not expand to an IRI ({iri!r})")
    if value is None:
        raise _fail(f"{name}: null is not a value")
    doc[iri] = copy.deepcopy(value)


def _member(doc: JSONObject, key: str, value: Any, terms: Terms, now: str) -> None:
    """Validate one top-level member into ``doc`` (the dispatch of parse and patch)."""
    if key == "registrationName" or key == "description" or key == "tenant":
        doc[key] = _text(value, key)
    elif key == "information":
        doc[key] = parse_information(value, terms)
    elif key == "endpoint":
        doc[key] = _endpoint(value)
    elif key == "mode":
        if value not in MODES:
            raise _fail(f"mode must be one of {', '.join(MODES)}")
        doc[key] = value
    elif key == "operations":
        doc[key] = check_operations(value)
    elif key == "observationInterval" or key == "managementInterval":
        doc[key] = _interval(value, key)
    elif key == "location" or key == "observationSpace" or key == "operationSpace":
        doc[key] = check_geometry(value, key)
    elif key == "expiresAt":
        doc[key] = check_expires(value, now)
    elif key == "contextSourceInfo":
        doc[key] = key_value_pairs(value, key, header_keys=True)
    elif key == "scope":
        scopes = check_scopes(value)
        doc[key] = value if isinstance(value, str) else scopes
    elif key == "refreshRate":
        parse_duration(value, key)
        doc[key] = value
    elif key == "management":
        doc[key] = _management(value)
    elif key in COUNTERS:
        raise _fail(f"{key} is set by the broker and cannot be written")
    else:
        _property(doc, key, value, terms)


def _check_whole(doc: JSONObject) -> None:
    """The rules that tie members together (4.3.6.3, 5.9.2.4)."""
    for key in _MANDATORY:
        if key not in doc:
            raise _fail(f"{key} is mandatory")
    if doc["mode"] == "exclusive":
        check_exclusive(doc["information"])
    if doc["mode"] == "auxiliary" and expand_operations(doc["operations"]) & WRITE_OPERATIONS:
        raise _fail("an auxiliary registration only serves reads: no write operations")


def _check_type(payload: Mapping[str, Any], *, required: bool) -> None:
    if (required or "type" in payload) and payload.get("type") != TYPE:
        raise _fail(f"type must be {TYPE}")


def parse_registration(
    payload: object, terms: Terms, now: str, *, new_id: Callable[[], str]
) -> JSONObject:
    """A Create Registration body (5.9.2) as a document; BadRequestData if invalid."""
    if not isinstance(payload, dict):
        raise _fail("the registration must be a JSON object")
    _check_type(payload, required=True)
    doc: JSONObject = {"id": new_id(), "type": TYPE}
    if "id" in payload:
        if not is_uri(payload["id"]):
            raise _fail(f"id {payload['id']!r} is not a URI")
        doc["id"] = payload["id"]
    for key, value in payload.items():
        if key not in _SKIPPED:
            _member(doc, key, value, terms, now)
    for key, default in DEFAULTS.items():
        doc.setdefault(key, copy.deepcopy(default))
    _check_whole(doc)
    doc["createdAt"] = doc["modifiedAt"] = now
    return doc


def patch_registration(
    doc: JSONObject, fragment: object, terms: Terms, now: str
) -> JSONObject:
    """Update Registration (5.9.3): the fragment's members replace the document's; null
    removes an optional one (``mode``/``operations`` fall back to their defaults). Returns a
    new document; ``doc`` is left as it was, also when the fragment is refused."""
    if not isinstance(fragment, dict):
        raise _fail("the fragment must be a JSON object")
    _check_type(fragment, required=False)
    if "id" in fragment and fragment["id"] != doc["id"]:
        raise _fail("the id of the fragment does not match the registration")
    if not any(k not in _SKIPPED for k in fragment):
        raise _fail("the fragment changes nothing")
    out = copy.deepcopy(doc)
    for key, value in fragment.items():
        if key in _SKIPPED:
            continue
        if value is None:
            if key in _MANDATORY:
                raise _fail(f"{key} is mandatory and cannot be removed")
            if key in COUNTERS:
                raise _fail(f"{key} is set by the broker and cannot be written")
            name = key if key in _MEMBERS else terms.expand(key)
            out.pop(name, None)
            if key in DEFAULTS:
                out[key] = copy.deepcopy(DEFAULTS[key])
            continue
        _member(out, key, value, terms, now)
    _check_whole(out)
    out["modifiedAt"] = now
    return out


def render_registration(
    doc: Mapping[str, Any], terms: Terms, now: str, *, sys_attrs: bool = False
) -> JSONObject:
    """A ContextSourceRegistration as the API shows it, names compacted with ``terms``.

    ``now`` is the reading time, as for subscriptions (nothing shown depends on it yet).
    """
    out: JSONObject = {}
    for key, value in doc.items():
        if key.startswith("_") or key in _SYSTEM:
            continue
        if key == "information":
            out[key] = render_information(value, terms)
        elif key in _MEMBERS or key in COUNTERS or key in ("id", "type"):
            out[key] = copy.deepcopy(value)
        else:
            out[terms.compact(key)] = copy.deepcopy(value)
    if sys_attrs:
        for key in ("createdAt", "modifiedAt"):
            if key in doc:
                out[key] = doc[key]
    return out


def registration_matches(
    doc: Mapping[str, Any], *, ids: set[str] | None, types: set[str] | None,
    attrs: set[str] | None, id_pattern: str | None = None,
) -> bool:
    """Whether one of the registration's information entries covers the entities (by id,
    ``id_pattern`` or type) and attributes asked; expanded IRIs, None = not restricted."""
    return any(covers(info, ids=ids, types=types, attrs=attrs, id_pattern=id_pattern)
               for info in doc["information"])
