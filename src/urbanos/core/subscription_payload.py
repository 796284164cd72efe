"""Subscription payloads in and out (clauses 5.2.12 - 5.2.15, 5.8.1 - 5.8.4).

``parse_subscription`` validates a Create Subscription body into the stored *document*;
``patch_subscription`` applies an Update Subscription fragment to one; ``render_subscription``
shows a document with the caller's @context. Invalid input is BadRequestData (clause 5.8.1:
the data types and restrictions of 5.2.12 not met), whatever member it is in.

The document keeps the members the subscriber gave, with attribute names, entity types and
the geoproperty expanded to IRIs (so it renders under any @context) and ``q``/``pick``/
``omit`` as the texts that were sent, with the expansion each name had then (``_terms``).
Members starting with ``_`` are internal and never shown: ``_context`` is the @context of
the creating request (notifications are compacted with it unless ``jsonldContext`` was
given explicitly, ``_explicitContext``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from urbanos.core.geo import parse_geoq
from urbanos.core.projection import parse_projection
from urbanos.core.query.parse import parse_q, parse_scope_q, parse_type_expr
from urbanos.core.selection import check_id_pattern
from urbanos.core.subscription import TRIGGERS, DeliveryStats, q_text, status_of, type_text
from urbanos.core.timeutil import parse_datetime
from urbanos.core.validation import check_datetime, check_name, is_uri
from urbanos.errors import BadRequestData
from urbanos.types import JSONObject, Terms

__all__ = ["parse_subscription", "patch_subscription", "render_subscription"]

FORMATS = frozenset({"normalized", "concise", "keyValues", "simplified"})
ACCEPTS = frozenset({"application/json", "application/ld+json", "application/geo+json"})
ENDPOINT_SCHEMES = frozenset({"http", "https", "mqtt", "mqtts"})
MQTT_VERSIONS = frozenset({"mqtt3.1.1", "mqtt5.0"})
#: members the broker sets: a subscriber may send them back, they are ignored (Table 5.2.12-2)
_READ_ONLY = frozenset({"status", "createdAt", "modifiedAt", "deletedAt"})
_NOTIFICATION_READ_ONLY = frozenset({"status", "timesSent", "timesFailed", "lastNotification",
                                     "lastFailure", "lastSuccess"})
_TOP = frozenset({"id", "type", "subscriptionName", "description", "entities",
                  "watchedAttributes", "notificationTrigger", "timeInterval", "q", "geoQ",
                  "csf", "isActive", "notification", "expiresAt", "throttling", "temporalQ",
                  "scopeQ", "lang", "datasetId", "jsonldContext", "@context",
                  "localOnly", "splitEntities"}) | _READ_ONLY
_NOTIFICATION = frozenset({"attributes", "format", "sysAttrs", "showChanges", "endpoint",
                           "pick", "omit", "join", "joinLevel"}) | _NOTIFICATION_READ_ONLY
_ENDPOINT = frozenset({"uri", "accept", "timeout", "cooldown", "receiverInfo", "notifierInfo"})
_SELECTOR = frozenset({"id", "idPattern", "type"})
_GEOQ = frozenset({"georel", "geometry", "coordinates", "geoproperty"})
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _fail(message: str) -> BadRequestData:
    return BadRequestData(message)


def _recording(terms: Terms) -> tuple[Callable[[str], str], dict[str, str]]:
    """An expander that remembers what it expanded, to parse the same text again later."""
    seen: dict[str, str] = {}

    def expand(term: str) -> str:
        seen[term] = terms.expand(term)
        return seen[term]

    return expand, seen


def _unknown(obj: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = sorted(k for k in obj if k not in allowed)
    if extra:
        raise _fail(f"{where}: unknown member(s) {', '.join(extra)}")


def _string(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(f"{what} must be a non-empty string")
    return value


def _number(value: object, what: str, *, positive: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(f"{what} must be a number")
    if value < 0 or (positive and value == 0):
        raise _fail(f"{what} must be {'above' if positive else 'at least'} 0")
    return value


def _names(value: object, terms: Terms, what: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _fail(f"{what} must be a non-empty array of attribute names")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise _fail(f"{what} must list attribute names")
        iri = terms.expand(check_name(item))
        if iri not in out:
            out.append(iri)
    return out


# --------------------------------------------------------------------------- members


def _entities(value: object, terms: Terms) -> list[JSONObject]:
    if not isinstance(value, list) or not value:
        raise _fail("entities must be a non-empty array of EntitySelectors")
    out: list[JSONObject] = []
    for item in value:
        if not isinstance(item, dict):
            raise _fail("each member of entities must be an object")
        _unknown(item, _SELECTOR, "entities")
        selector: JSONObject = {}
        if "id" in item:
            if not is_uri(item["id"]):
                raise _fail(f"entities: id {item['id']!r} is not a URI")
            selector["id"] = item["id"]
        if "idPattern" in item:
            check_id_pattern(_string(item["idPattern"], "entities: idPattern"))
            selector["idPattern"] = item["idPattern"]
        if "type" not in item:
            raise _fail("entities: each EntitySelector needs a type")
        expr = parse_type_expr(_string(item["type"], "entities: type"), terms.expand)
        selector["type"] = type_text(expr, lambda iri: iri)
        out.append(selector)
    return out


def _triggers(value: object) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _fail("notificationTrigger must be a non-empty array")
    for item in value:
        if item not in TRIGGERS:
            raise _fail(f"notificationTrigger: {item!r} is not one of {', '.join(TRIGGERS)}")
    return list(dict.fromkeys(value))


def _geoq(value: object, terms: Terms) -> JSONObject:
    if not isinstance(value, dict):
        raise _fail("geoQ must be an object")
    _unknown(value, _GEOQ, "geoQ")
    for key in ("georel", "geometry", "coordinates"):
        if key not in value:
            raise _fail(f"geoQ: missing {key}")
    prop = value.get("geoproperty")
    if prop is not None:
        check_name(_string(prop, "geoQ: geoproperty"))
    geo = parse_geoq(value["georel"], value["geometry"], value["coordinates"], prop,
                     terms.expand)
    assert geo is not None
    out: JSONObject = {"georel": geo.georel_text, "geometry": geo.geometry,
                       "coordinates": geo.coordinates}
    if prop is not None:
        out["geoproperty"] = geo.geoproperty
    return out


def key_value_pairs(value: object, what: str, *, header_keys: bool) -> list[JSONObject]:
    """KeyValuePair arrays (clause 5.2.22): string key and value, nothing else, no CR/LF."""
    if not isinstance(value, list):
        raise _fail(f"{what} must be an array of key-value pairs")
    out: list[JSONObject] = []
    for pair in value:
        if not isinstance(pair, dict) or set(pair) != {"key", "value"}:
            raise _fail(f"{what}: each pair has exactly a key and a value")
        key, val = pair["key"], pair["value"]
        if not isinstance(key, str) or not key or not isinstance(val, str):
            raise _fail(f"{what}: key and value must be strings")
        if _CONTROL.search(key) or _CONTROL.search(val):
            raise _fail(f"{what}: control characters (CR, LF...) are not allowed")
        if header_keys and not _TOKEN.match(key):
            raise _fail(f"{what}: {key!r} is not a valid header name")
        out.append({"key": key, "value": val})
    return out


def _endpoint(value: object) -> JSONObject:
    if not isinstance(value, dict):
        raise _fail("notification.endpoint must be an object")
    _unknown(value, _ENDPOINT, "notification.endpoint")
    uri = _string(value.get("uri"), "notification.endpoint.uri")
    if not is_uri(uri) or _CONTROL.search(uri):
        raise _fail(f"notification.endpoint.uri {uri!r} is not a URI")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise _fail(f"notification.endpoint.uri {uri!r} is malformed: {exc}") from None
    if parts.scheme.lower() not in ENDPOINT_SCHEMES:
        raise _fail("notification.endpoint.uri must be an http, https, mqtt or mqtts URI")
    if not parts.hostname:
        raise _fail(f"notification.endpoint.uri {uri!r} has no host")
    out: JSONObject = {"uri": uri}
    if "accept" in value:
        if value["accept"] not in ACCEPTS:
            raise _fail(f"notification.endpoint.accept must be one of {', '.join(sorted(ACCEPTS))}")
        out["accept"] = value["accept"]
    for key in ("timeout", "cooldown"):
        if key in value:
            out[key] = _number(value[key], f"notification.endpoint.{key}")
    if "receiverInfo" in value:
        out["receiverInfo"] = key_value_pairs(value["receiverInfo"], "receiverInfo",
                                          header_keys=not parts.scheme.startswith("mqtt"))
    if "notifierInfo" in value:
        out["notifierInfo"] = key_value_pairs(value["notifierInfo"], "notifierInfo",
                                              header_keys=False)
        for pair in out["notifierInfo"]:
            if pair["key"] == "MQTT-QoS" and pair["value"] not in ("0", "1", "2"):
                raise _fail("notifierInfo: MQTT-QoS must be 0, 1 or 2")
            if pair["key"] == "MQTT-Version" and pair["value"] not in MQTT_VERSIONS:
                raise _fail("notifierInfo: MQTT-Version must be mqtt3.1.1 or mqtt5.0")
    return out


def _projection(value: object, terms: Terms, label: str) -> tuple[Any, dict[str, str]]:
    if isinstance(value, list):
        if not value or not all(isinstance(x, str) and x for x in value):
            raise _fail(f"notification.{label} must be a non-empty array of member names")
        text = ",".join(value)
    elif isinstance(value, str) and value:
        text = value
    else:
        raise _fail(f"notification.{label} must be a non-empty array or string")
    expand, seen = _recording(terms)
    parse_projection(text, lambda n: expand(check_name(n)), label=label)
    return value, seen


def _notification(value: object, terms: Terms) -> tuple[JSONObject, dict[str, dict[str, str]]]:
    if not isinstance(value, dict):
        raise _fail("notification must be an object")
    _unknown(value, _NOTIFICATION, "notification")
    if "endpoint" not in value or value["endpoint"] is None:
        raise _fail("notification.endpoint is mandatory")
    out: JSONObject = {}
    found: dict[str, dict[str, str]] = {}
    if "attributes" in value:
        out["attributes"] = _names(value["attributes"], terms, "notification.attributes")
    if "format" in value:
        if value["format"] not in FORMATS:
            raise _fail(f"notification.format must be one of {', '.join(sorted(FORMATS))}")
        out["format"] = value["format"]
    for key in ("sysAttrs", "showChanges"):
        if key in value:
            if not isinstance(value[key], bool):
                raise _fail(f"notification.{key} must be true or false")
            out[key] = value[key]
    if out.get("showChanges") and out.get("format") in ("keyValues", "simplified"):
        raise _fail("notification.showChanges cannot be true with the keyValues format")
    for label in ("pick", "omit"):
        if label in value:
            out[label], found[label] = _projection(value[label], terms, label)
    if "pick" in out and "omit" in out:
        raise _fail("notification: pick and omit cannot be used together")
    if "attributes" in out and ("pick" in out or "omit" in out):
        raise _fail("notification: attributes cannot be combined with pick or omit")
    if "join" in value:
        if value["join"] not in ("inline", "flat", "@none"):
            raise _fail("notification.join must be inline, flat or @none")
        out["join"] = value["join"]
    if "joinLevel" in value:
        level = value["joinLevel"]
        if isinstance(level, bool) or not isinstance(level, int) or level < 1:
            raise _fail("notification.joinLevel must be a positive integer")
        out["joinLevel"] = level
    out["endpoint"] = _endpoint(value["endpoint"])
    return out, found


def _dataset_ids(value: object) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _fail("datasetId must be a non-empty array")
    for item in value:
        if item != "@none" and not is_uri(item):
            raise _fail(f"datasetId: {item!r} is neither a URI nor @none")
    return list(value)


def check_expires(value: object, now: str) -> str:
    check_datetime(value, "expiresAt")
    assert isinstance(value, str)
    at, current = parse_datetime(value), parse_datetime(now)
    if at is None or current is None or at <= current:
        raise _fail("expiresAt must be in the future")
    return value


# --------------------------------------------------------------------------- documents


def _member(doc: JSONObject, key: str, value: Any, terms: Terms, now: str) -> None:
    """Validate one top-level member into ``doc`` (the dispatch of parse and patch)."""
    t: dict[str, dict[str, str]] = doc.setdefault("_terms", {})
    if key == "subscriptionName" or key == "description" or key == "lang":
        if not isinstance(value, str):
            raise _fail(f"{key} must be a string")
        doc[key] = value
    elif key == "entities":
        doc[key] = _entities(value, terms)
    elif key == "watchedAttributes":
        doc[key] = _names(value, terms, key)
    elif key == "notificationTrigger":
        doc[key] = _triggers(value)
    elif key == "timeInterval" or key == "throttling":
        doc[key] = _number(value, key, positive=key == "timeInterval")
    elif key == "q":
        expand, seen = _recording(terms)
        parse_q(q_text(_string(value, "q")), expand)
        doc[key], t["q"] = value, seen
    elif key == "csf":
        parse_q(q_text(_string(value, "csf")), terms.expand)
        doc[key] = value
    elif key == "scopeQ":
        parse_scope_q(_string(value, "scopeQ"))
        doc[key] = value
    elif key == "geoQ":
        doc[key] = _geoq(value, terms)
    elif key in ("isActive", "localOnly", "splitEntities"):
        if not isinstance(value, bool):
            raise _fail(f"{key} must be true or false")
        doc[key] = value
    elif key == "expiresAt":
        doc[key] = check_expires(value, now)
    elif key == "datasetId":
        doc[key] = _dataset_ids(value)
    elif key == "temporalQ":
        if not isinstance(value, dict):
            raise _fail("temporalQ must be an object")
        doc[key] = copy.deepcopy(value)
    elif key == "notification":
        doc[key], found = _notification(value, terms)
        t.pop("pick", None)
        t.pop("omit", None)
        t.update(found)
    elif key == "jsonldContext":
        if not is_uri(value):
            raise _fail(f"jsonldContext {value!r} is not a URI")
        doc[key] = value
        doc["_explicitContext"] = True


def _check_whole(doc: JSONObject) -> None:
    """The rules that tie members together (clause 5.2.12)."""
    if "entities" not in doc and "watchedAttributes" not in doc:
        raise _fail("a subscription needs entities or watchedAttributes")
    if "timeInterval" in doc and "throttling" in doc:
        raise _fail("throttling and timeInterval cannot be used together")
    if "timeInterval" in doc and "watchedAttributes" in doc:
        raise _fail("watchedAttributes and timeInterval cannot be used together")
    if "notification" not in doc:
        raise _fail("notification is mandatory")


def parse_subscription(
    payload: object, terms: Terms, now: str, *, new_id: Callable[[], str]
) -> JSONObject:
    """A Create Subscription body (clause 5.8.1) as a document; BadRequestData if invalid.

    ``jsonldContext`` is left to the caller unless the subscriber gave one: it is the URL
    of the request's @context, which only the context registry can hand out.
    """
    if not isinstance(payload, dict):
        raise _fail("the subscription must be a JSON object")
    _unknown(payload, _TOP, "subscription")
    if payload.get("type") != "Subscription":
        raise _fail("type must be Subscription")
    doc: JSONObject = {"id": new_id(), "type": "Subscription"}
    if "id" in payload:
        if not is_uri(payload["id"]):
            raise _fail(f"id {payload['id']!r} is not a URI")
        doc["id"] = payload["id"]
    for key, value in payload.items():
        if key in ("id", "type", "@context") or key in _READ_ONLY:
            continue
        _member(doc, key, value, terms, now)
    _check_whole(doc)
    doc["createdAt"] = doc["modifiedAt"] = now
    return doc


def patch_subscription(
    doc: JSONObject, fragment: object, terms: Terms, now: str
) -> JSONObject:
    """Update Subscription (clause 5.8.2): the fragment's members replace the document's;
    null removes an optional member, and removing a mandatory one is BadRequestData."""
    if not isinstance(fragment, dict):
        raise _fail("the fragment must be a JSON object")
    _unknown(fragment, _TOP, "subscription fragment")
    if "type" in fragment and fragment["type"] != "Subscription":
        raise _fail("type must be Subscription")
    if "id" in fragment and fragment["id"] != doc["id"]:
        raise _fail("the id of the fragment does not match the subscription")
    if not any(k not in ("id", "type", "@context") and k not in _READ_ONLY for k in fragment):
        raise _fail("the fragment changes nothing")
    out = copy.deepcopy(doc)
    for key, value in fragment.items():
        if key in ("id", "type", "@context") or key in _READ_ONLY:
            continue
        if value is None:
            if key == "notification":
                raise _fail("notification is mandatory and cannot be removed")
            out.pop(key, None)
            out.get("_terms", {}).pop(key, None)
            if key == "jsonldContext":
                out.pop("_explicitContext", None)
                out["jsonldContext"] = doc.get("_defaultContext", doc["jsonldContext"])
            continue
        _member(out, key, value, terms, now)
    _check_whole(out)
    out["modifiedAt"] = now
    return out


# --------------------------------------------------------------------------- rendering


def render_subscription(
    doc: Mapping[str, Any], terms: Terms, stats: DeliveryStats, now: str,
    *, sys_attrs: bool = False,
) -> JSONObject:
    """A Subscription as the API shows it (clause 5.2.12), names compacted with ``terms``."""
    out: JSONObject = {}
    for key, value in doc.items():
        if key.startswith("_") or key in ("createdAt", "modifiedAt", "notification"):
            continue
        if key == "entities":
            out[key] = [_render_selector(s, terms) for s in value]
        elif key == "watchedAttributes":
            out[key] = [terms.compact(a) for a in value]
        elif key == "geoQ":
            out[key] = {k: terms.compact(v) if k == "geoproperty" else v
                        for k, v in value.items()}
        else:
            out[key] = copy.deepcopy(value)
    out.setdefault("notificationTrigger", ["attributeCreated", "attributeUpdated"])
    out["notification"] = _render_notification(doc["notification"], terms, stats)
    out["status"] = status_of(doc, now)
    if sys_attrs:
        out["createdAt"] = doc.get("createdAt")
        out["modifiedAt"] = doc.get("modifiedAt")
    return out


def _render_selector(selector: Mapping[str, Any], terms: Terms) -> JSONObject:
    out = dict(selector)
    if "type" in selector:
        out["type"] = type_text(parse_type_expr(selector["type"], lambda t: t), terms.compact)
    return out


def _render_notification(
    params: Mapping[str, Any], terms: Terms, stats: DeliveryStats
) -> JSONObject:
    out = copy.deepcopy(dict(params))
    if "attributes" in out:
        out["attributes"] = [terms.compact(a) for a in out["attributes"]]
    if stats.times_sent:  # like the last* members, shown once a notification was tried
        out["timesSent"] = stats.times_sent
        out["timesFailed"] = stats.times_failed
    for key, value in (("lastNotification", stats.last_notification),
                       ("lastSuccess", stats.last_success),
                       ("lastFailure", stats.last_failure),
                       ("status", stats.status)):
        if value is not None:
            out[key] = value
    return out
