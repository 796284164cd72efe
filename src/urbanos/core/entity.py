"""Request payloads into the stored form (see ``model``), with the spec's validation rules.

Accepts the normalized and the concise representations (GS CIM 009 clause 4.5), so that
what the broker renders can be sent back unchanged. Everything invalid raises
``BadRequestData`` before any state changes.
"""

from __future__ import annotations

import re
from typing import Any

from urbanos.core import geo
from urbanos.core.model import (
    ATTRIBUTE_KINDS,
    GEO_ATTRIBUTES,
    NGSI_LD,
    NULL_URN,
    VALUE_MEMBER,
)
from urbanos.core.timeutil import parse_datetime
from urbanos.errors import BadRequestData
from urbanos.types import JSONObject, Terms

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]+$")
_FORBIDDEN_NAME = re.compile(r"[<>\"'=;()\s\x00-\x1f\x7f]")
_SCOPE = re.compile(r"^/[^/#+\s]+(/[^/#+\s]+)*$")
_GEOJSON_TYPES = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
     "GeometryCollection"}
)
#: members an instance may carry besides sub-attributes
_INSTANCE_MEMBERS = frozenset(
    {"type", "observedAt", "unitCode", "datasetId", "objectType", "createdAt", "modifiedAt",
     "instanceId", "lang", "deletedAt"} | set(VALUE_MEMBER.values())
)
_SYSTEM_MEMBERS = frozenset({"createdAt", "modifiedAt", "instanceId", "deletedAt"})
_KIND_BY_MEMBER = {
    "object": "Relationship",
    "languageMap": "LanguageProperty",
    "vocab": "VocabProperty",
    "json": "JsonProperty",
    "valueList": "ListProperty",
    "objectList": "ListRelationship",
    "value": "Property",
}


def is_uri(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 2048 and _URI.match(value) is not None


def check_entity_id(value: object) -> str:
    if not is_uri(value):
        raise BadRequestData(f"entity id must be a URI, got {value!r}")
    assert isinstance(value, str)
    return value


def check_name(name: object, what: str = "attribute name") -> str:
    if not isinstance(name, str) or not name or len(name) > 512 or _FORBIDDEN_NAME.search(name):
        raise BadRequestData(f"invalid {what}: {name!r}")
    return name


def expand_types(value: object, terms: Terms) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise BadRequestData("entity type must not be empty")
    out: list[str] = []
    for item in items:
        check_name(item, "entity type")
        iri = terms.expand(item)
        if iri not in out:
            out.append(iri)
    return out


def check_scopes(value: object) -> list[str]:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str) or not _SCOPE.match(item):
            raise BadRequestData(f"invalid scope: {item!r}")
    return list(items)


def expand_entity(
    payload: object,
    terms: Terms,
    now: str,
    *,
    entity_id: str | None = None,
    require_type: bool = True,
    merge: bool = False,
) -> JSONObject:
    """The stored form of an entity payload (create, replace, upsert, merge fragments)."""
    if not isinstance(payload, dict):
        raise BadRequestData("an entity must be a JSON object")
    if "id" in payload or entity_id is None:
        eid = check_entity_id(payload.get("id", payload.get("@id")))
        if entity_id is not None and eid != entity_id:
            raise BadRequestData("the id in the payload does not match the id in the URL")
    else:
        eid = entity_id
    entity: JSONObject = {"id": eid}
    raw_type = payload.get("type", payload.get("@type"))
    if raw_type is not None:
        entity["type"] = expand_types(raw_type, terms)
    elif require_type:
        raise BadRequestData("an entity must have a type")
    if "scope" in payload:
        if merge and payload["scope"] in (None, NULL_URN):
            entity["scope"] = None
        else:
            entity["scope"] = check_scopes(payload["scope"])
    body = {k: v for k, v in payload.items() if k not in _ENTITY_KEYS}
    entity["attrs"] = expand_attributes(body, terms, now, merge=merge)
    entity["createdAt"] = now
    entity["modifiedAt"] = now
    return entity


_ENTITY_KEYS = frozenset(
    {"id", "@id", "type", "@type", "scope", "@context", "createdAt", "modifiedAt", "deletedAt"}
)


def expand_attributes(
    body: JSONObject, terms: Terms, now: str, *, merge: bool = False
) -> dict[str, list[JSONObject]]:
    """Attribute fragments (``{name: instance | [instances]}``) in the stored form."""
    attrs: dict[str, list[JSONObject]] = {}
    for name, raw in body.items():
        check_name(name)
        iri = terms.expand(name)
        attrs[iri] = expand_attribute(iri, raw, terms, now, merge=merge)
    return attrs


def expand_attribute(
    iri: str, raw: object, terms: Terms, now: str, *, merge: bool = False
) -> list[JSONObject]:
    """One attribute's instances; a list of objects is a multi-attribute (one per datasetId)."""
    if isinstance(raw, list) and raw and all(isinstance(r, dict) for r in raw):
        instances = [expand_instance(iri, r, terms, now, merge=merge) for r in raw]
    else:
        instances = [expand_instance(iri, raw, terms, now, merge=merge)]
    seen: set[str | None] = set()
    for inst in instances:
        ds = inst.get("datasetId")
        if ds in seen:
            what = f"datasetId {ds}" if ds else "default instance (no datasetId)"
            raise BadRequestData(f"attribute {iri} has the {what} more than once")
        seen.add(ds)
    return instances


def expand_instance(
    iri: str, raw: object, terms: Terms, now: str, *, merge: bool = False, sub: bool = False
) -> JSONObject:
    """One attribute instance, inferring the kind for concise input."""
    if raw is None:
        if merge:
            return {"type": "Property", "value": NULL_URN}
        raise BadRequestData(f"attribute {iri} must not be null")
    if not isinstance(raw, dict):
        return {"type": "Property", "value": raw} | ({} if sub else _stamps(now))
    kind = raw.get("type")
    if isinstance(kind, str) and kind.startswith(NGSI_LD):
        kind = kind[len(NGSI_LD):]
    if kind in _GEOJSON_TYPES and ("coordinates" in raw or "geometries" in raw):
        geo.validate_geometry(raw)
        return {"type": "GeoProperty", "value": raw} | ({} if sub else _stamps(now))
    if kind is None:
        kind = next((k for m, k in _KIND_BY_MEMBER.items() if m in raw), None)
        if kind is None:
            if merge and not raw:
                raise BadRequestData(f"attribute {iri} is empty")
            return {"type": "Property", "value": raw} | ({} if sub else _stamps(now))
    if kind not in ATTRIBUTE_KINDS:
        raise BadRequestData(f"attribute {iri} has an unknown type {kind!r}")
    member = VALUE_MEMBER[kind]
    if member not in raw:
        raise BadRequestData(f"{kind} {iri} has no {member!r}")
    inst: JSONObject = {"type": kind}
    value = raw[member]
    if merge and value in (None, NULL_URN):
        inst[member] = NULL_URN
    else:
        inst[member] = _check_value(iri, kind, value, terms)
    if kind == "Property" and iri in GEO_ATTRIBUTES and _is_geometry(value):
        inst["type"] = "GeoProperty"
    for key, val in raw.items():
        if key in ("type", member) or key in _SYSTEM_MEMBERS:
            continue
        if key in _INSTANCE_MEMBERS:
            inst[key] = _check_member(iri, kind, key, val, terms)
        else:
            check_name(key, "sub-attribute name")
            sub_iri = terms.expand(key)
            inst[sub_iri] = expand_instance(sub_iri, val, terms, now, merge=merge, sub=True)
    if not sub:
        inst.update(_stamps(now))
    return inst


def _stamps(now: str) -> JSONObject:
    return {"createdAt": now, "modifiedAt": now}


def _is_geometry(value: object) -> bool:
    return isinstance(value, dict) and value.get("type") in _GEOJSON_TYPES


def _check_value(iri: str, kind: str, value: object, terms: Terms) -> object:
    if value is None:
        raise BadRequestData(f"{kind} {iri} must not have a null value")
    if kind == "GeoProperty":
        geo.validate_geometry(value)
    elif kind == "Relationship":
        items = value if isinstance(value, list) else [value]
        if not items or not all(is_uri(o) for o in items):
            raise BadRequestData(f"Relationship {iri} must have a URI object")
    elif kind == "LanguageProperty":
        if not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and _is_text(v) for k, v in value.items()
        ):
            raise BadRequestData(f"LanguageProperty {iri} needs a map of language tags to text")
    elif kind == "VocabProperty":
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v for v in items):
            raise BadRequestData(f"VocabProperty {iri} needs a term or a list of terms")
        expanded = [terms.expand(v) for v in items]
        return expanded if isinstance(value, list) else expanded[0]
    elif kind == "ListProperty":
        if not isinstance(value, list):
            raise BadRequestData(f"ListProperty {iri} needs a valueList array")
    elif kind == "ListRelationship":
        if not isinstance(value, list) or not all(
            is_uri(o) or (isinstance(o, dict) and is_uri(o.get("object"))) for o in value
        ):
            raise BadRequestData(f"ListRelationship {iri} needs an objectList of URIs")
    elif kind == "Property" and isinstance(value, dict) and value.get("type") == "Property":
        raise BadRequestData(f"Property {iri} has an attribute as its value")
    return value


def _is_text(value: object) -> bool:
    if isinstance(value, list):
        return all(isinstance(v, str) for v in value)
    return isinstance(value, str)


def _check_member(iri: str, kind: str, key: str, value: object, terms: Terms) -> object:
    if key == "observedAt":
        if parse_datetime(value) is None:
            raise BadRequestData(f"observedAt of {iri} is not a date-time: {value!r}")
    elif key == "unitCode":
        if not isinstance(value, str) or not value:
            raise BadRequestData(f"unitCode of {iri} must be a string")
    elif key == "datasetId":
        if not is_uri(value):
            raise BadRequestData(f"datasetId of {iri} must be a URI")
    elif key == "objectType":
        if kind not in ("Relationship", "ListRelationship"):
            raise BadRequestData(f"objectType is only for relationships ({iri})")
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) and v for v in items):
            raise BadRequestData(f"objectType of {iri} must be a type name")
        expanded = [terms.expand(v) for v in items]
        return expanded if isinstance(value, list) else expanded[0]
    elif key == "lang":
        if not isinstance(value, str):
            raise BadRequestData(f"lang of {iri} must be a string")
    else:
        raise BadRequestData(f"{key} is not allowed in {kind} {iri}")
    return value


def any_instance_value(inst: JSONObject) -> Any:
    """The member that carries an instance's value, by kind."""
    return inst.get(VALUE_MEMBER.get(inst.get("type", ""), "value"))
