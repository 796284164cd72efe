"""Request payloads into the stored form (see ``model``), with the spec's validation rules.

Accepts the normalized and the concise representations (GS CIM 009 clause 4.5), so that
what the broker renders can be sent back unchanged. A malformed payload raises
``InvalidRequest``, invalid content ``BadRequestData``, always before any state changes.

How the NGSI-LD Null (clause 5.2.1) and incomplete attributes are treated depends on the
operation, given as a ``Mode``:

* ``CREATE`` (create, replace, replace attribute): complete attributes, Null rejected;
* ``UPDATE`` (update/append attributes, 5.6.2/5.6.3): complete attributes; an attribute or
  sub-attribute whose value is Null is a deletion marker;
* ``PARTIAL`` (partial attribute update, 5.6.4/5.5.8): members may be left out, a member set
  to Null is a deletion marker;
* ``MERGE`` (merge entity and batch merge, 5.6.17/5.5.12): as ``PARTIAL``, and inside a
  compound Property value a key set to Null is kept as a marker, for the RFC 7396 merge
  that removes it.

Only ``MERGE`` allows a Null nested inside a value (clause 5.5.4). A JSON ``null`` is never
the NGSI-LD Null (clause 5.2.1): as a member it is rejected, inside a value it is data. An
``application/merge-patch+json`` body states deletions with JSON null; the endpoint turns
them into the NGSI-LD Null first (``validation.merge_patch_nulls``).
"""

from __future__ import annotations

from enum import Enum
from functools import cache
from typing import Any

from urbanos.core.expiry import canonical
from urbanos.core.model import (
    ATTRIBUTE_KINDS,
    CORE_MEMBER_BY_IRI,
    CORE_MEMBERS,
    DEFAULT_VOCAB,
    GEO_ATTRIBUTES,
    NGSI_LD,
    NULL_URN,
    VALUE_MEMBER,
)
from urbanos.core.validation import (
    check_datetime,
    check_entity_id,
    check_geometry,
    check_language_map,
    check_name,
    check_scopes,
    contains_null,
    is_geometry,
    is_uri,
    is_utc_datetime,
    looks_like_geometry,
)
from urbanos.errors import BadRequestData, InvalidRequest
from urbanos.types import JSONObject, Terms

__all__ = [
    "Mode",
    "any_instance_value",
    "check_attribute_name",
    "check_entity_id",
    "check_name",
    "check_scopes",
    "expand_attribute",
    "expand_attributes",
    "expand_entity",
    "expand_types",
    "is_uri",
]


class Mode(Enum):
    """What an operation accepts of the NGSI-LD Null and of incomplete attributes."""

    CREATE = "create"
    UPDATE = "update"
    PARTIAL = "partial"
    MERGE = "merge"

    @property
    def deletes(self) -> bool:
        return self is not Mode.CREATE

    @property
    def partial(self) -> bool:
        return self in (Mode.PARTIAL, Mode.MERGE)


#: entity members that are not attributes; system members are output-only and ignored
_ENTITY_KEYS = frozenset(
    {"id", "@id", "type", "@type", "scope", "@context", "createdAt", "modifiedAt", "deletedAt",
     "expiresAt"}
)
#: members set by the broker: accepted (a rendered entity can be sent back) and ignored
_SYSTEM_MEMBERS = frozenset({"createdAt", "modifiedAt", "instanceId", "deletedAt"})
#: members only the broker writes (showChanges, inline joins): never accepted on input
_OUTPUT_ONLY = frozenset(
    {"previousValue", "previousObject", "previousLanguageMap", "previousVocab", "previousJson",
     "previousValueList", "previousObjectList", "entity", "entityList"}
)
#: non-reified members introduced by v1.9 (the proof members belong to ``ngsildproof``)
_SEALED = frozenset({"entityIdSealed", "entityTypeSealed"})
_OPTIONAL_MEMBERS = frozenset({"observedAt", "unitCode", "datasetId", "objectType", "lang",
                               "valueType", "expiresAt"}) | _SEALED
#: core terms that can never name an attribute (clause 4.5.1): the members above and the
#: entity's own
_RESERVED_NAMES = (
    frozenset(VALUE_MEMBER.values()) | _SYSTEM_MEMBERS | _OUTPUT_ONLY | _OPTIONAL_MEMBERS
    | {"id", "type", "scope", "@context"}
)
_RELATIONSHIPS = frozenset({"Relationship", "ListRelationship"})
_UNITLESS = _RELATIONSHIPS | {"JsonProperty"}
_KIND_BY_MEMBER = {
    "value": "Property",
    "object": "Relationship",
    "languageMap": "LanguageProperty",
    "vocab": "VocabProperty",
    "json": "JsonProperty",
    "valueList": "ListProperty",
    "objectList": "ListRelationship",
}
_LANG_STRING = frozenset(
    {"langString", "rdf:langString", "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString"}
)
_PROOF_IRIS = frozenset({NGSI_LD + "ngsildproof", DEFAULT_VOCAB + "ngsildproof"})


@cache
def _reserved_iris() -> frozenset[str]:
    from urbanos.core.jsonld import core_term_map

    core = core_term_map()
    return frozenset(CORE_MEMBER_BY_IRI) | {core.expand(n) for n in _RESERVED_NAMES}


def check_attribute_name(name: object, terms: Terms, what: str = "attribute name") -> str:
    """The expanded IRI of an attribute name: a valid name that is not a core member."""
    check_name(name, what)
    assert isinstance(name, str)
    iri = terms.expand(name)
    if name in _RESERVED_NAMES or iri in _reserved_iris():
        raise BadRequestData(f"{name!r} is a core NGSI-LD member, not an {what}")
    if not is_uri(iri):
        raise BadRequestData(f"{what} {name!r} does not expand to an IRI ({iri!r})")
    return iri


def expand_types(value: object, terms: Terms) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise BadRequestData("entity type must not be empty")
    out: list[str] = []
    for item in items:
        check_name(item, "entity type")
        assert isinstance(item, str)
        iri = terms.expand(item)
        if not is_uri(iri):
            raise BadRequestData(f"entity type {item!r} does not expand to an IRI ({iri!r})")
        if iri not in out:
            out.append(iri)
    return out


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
        raise InvalidRequest("an entity must be a JSON object")
    mode = Mode.MERGE if merge else Mode.CREATE
    if "id" in payload or "@id" in payload or entity_id is None:
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
        if mode.deletes and payload["scope"] == NULL_URN:
            entity["scope"] = None
        else:
            entity["scope"] = check_scopes(payload["scope"])
    if "expiresAt" in payload:
        entity["expiresAt"] = _entity_expiry(payload["expiresAt"], now, mode)
    body = {k: v for k, v in payload.items() if k not in _ENTITY_KEYS}
    entity["attrs"] = expand_attributes(body, terms, now, mode=mode)
    entity["createdAt"] = now
    entity["modifiedAt"] = now
    return entity


def _entity_expiry(value: object, now: str, mode: Mode) -> str | None:
    """An entity's expiresAt (clause 4.22): a DateTime; in a merge the NGSI-LD Null removes
    it (None), and a creation cannot be born expired."""
    if mode.deletes and value == NULL_URN:
        return None
    at = check_datetime(value, "expiresAt")
    if mode is Mode.CREATE and canonical(at) <= canonical(now):
        raise BadRequestData(f"expiresAt {at} is not in the future")
    return at


def expand_attributes(
    body: JSONObject, terms: Terms, now: str, *, merge: bool = False, mode: Mode | None = None
) -> dict[str, list[JSONObject]]:
    """Attribute fragments (``{name: instance | [instances]}``) in the stored form.

    ``merge=True`` means ``Mode.UPDATE`` (complete attributes, Null deletes).
    """
    mode = mode or (Mode.UPDATE if merge else Mode.CREATE)
    attrs: dict[str, list[JSONObject]] = {}
    for name, raw in body.items():
        iri = check_attribute_name(name, terms)
        if iri in attrs:
            raise BadRequestData(f"attribute {iri} is given twice")
        attrs[iri] = expand_attribute(iri, raw, terms, now, mode=mode)
    return attrs


def expand_attribute(
    iri: str, raw: object, terms: Terms, now: str, *, merge: bool = False,
    mode: Mode | None = None,
) -> list[JSONObject]:
    """One attribute's instances; a list of objects is a multi-attribute (one per datasetId).

    ``merge=True`` means ``Mode.PARTIAL`` (the partial attribute update of clause 5.6.4).
    """
    mode = mode or (Mode.PARTIAL if merge else Mode.CREATE)
    if isinstance(raw, list) and raw and all(isinstance(r, dict) for r in raw):
        instances = [_instance(iri, r, terms, now, mode) for r in raw]
    else:
        instances = [_instance(iri, raw, terms, now, mode)]
    seen: set[str | None] = set()
    for inst in instances:
        ds = inst.get("datasetId")
        if ds in seen:
            what = f"datasetId {ds}" if ds else "default instance (no datasetId)"
            raise BadRequestData(f"attribute {iri} has the {what} more than once")
        seen.add(ds)
    return instances


def _instance(
    iri: str, raw: object, terms: Terms, now: str, mode: Mode, *, sub: bool = False
) -> JSONObject:
    """One attribute instance, inferring the kind of concise input."""
    if type(raw) is dict:
        simple = _simple_instance(iri, raw)
        if simple is not None:
            if not sub:
                simple["createdAt"] = simple["modifiedAt"] = now
            return simple
    stamps: JSONObject = {} if sub else {"createdAt": now, "modifiedAt": now}
    if raw is None:
        raise BadRequestData(f"attribute {iri} is JSON null; the NGSI-LD Null is {NULL_URN!r}")
    if raw == NULL_URN:
        if not mode.deletes:
            raise BadRequestData(f"attribute {iri} must not be null")
        return {"type": "Property", "value": NULL_URN} | stamps
    if not isinstance(raw, dict):
        return _concise_value(iri, raw, mode) | stamps
    bad = next((k for k in raw if isinstance(k, str) and k.startswith("@")), None)
    if bad is not None:
        raise BadRequestData(f"attribute {iri} must not hold {bad!r} (clause 5.5.7)")
    kind = raw.get("type")
    if kind is not None and not isinstance(kind, str):
        raise BadRequestData(f"the type of attribute {iri} must be a string")
    if kind is not None and kind.startswith(NGSI_LD):
        kind = kind[len(NGSI_LD):]
    if looks_like_geometry(raw):
        return {"type": "GeoProperty", "value": check_geometry(raw, f"attribute {iri}")} | stamps
    if kind is None:
        members = [m for m in _KIND_BY_MEMBER if m in raw]
        if len(members) > 1:
            raise BadRequestData(f"attribute {iri} has several values: {', '.join(members)}")
        if members:
            kind = _KIND_BY_MEMBER[members[0]]
            if kind == "Property" and is_geometry(raw["value"]):
                kind = "GeoProperty"
        elif mode.partial and not raw:
            raise BadRequestData(f"attribute {iri} is empty")
        elif mode is not Mode.PARTIAL and not any(
            k in _OPTIONAL_MEMBERS or k in _SYSTEM_MEMBERS for k in raw
        ):
            # a concise Property whose value is this object; a partial update fragment
            # (clause 5.6.4) is always members and sub-attributes instead
            return _concise_value(iri, raw, mode) | stamps
        elif not mode.partial:
            raise BadRequestData(f"attribute {iri} has no value")
    elif kind not in ATTRIBUTE_KINDS:
        raise BadRequestData(f"attribute {iri} has an unknown type {kind!r}")
    inst: JSONObject = {} if kind is None else {"type": kind}
    if kind is not None:
        _value(iri, kind, raw, terms, mode, inst)
    for key, val in raw.items():
        if key == "type" or key == VALUE_MEMBER.get(kind or "") or key in _SYSTEM_MEMBERS:
            continue
        if key in _KIND_BY_MEMBER or key in _OUTPUT_ONLY:
            raise BadRequestData(f"{key} is not allowed in {kind or 'attribute'} {iri}")
        if key in _OPTIONAL_MEMBERS:
            _member(iri, kind, key, val, terms, mode, inst, sub=sub)
        else:
            sub_iri = check_attribute_name(key, terms, "sub-attribute name")
            inst[sub_iri] = _instance(sub_iri, val, terms, now, mode, sub=True)
    if not sub and iri in _PROOF_IRIS:
        _check_proof(iri, inst)
    return inst | stamps


#: kind -> (its value member, every member the simple form may hold)
_SIMPLE_FORMS = {
    "Property": ("value", frozenset({"type", "value", "observedAt", "unitCode", "datasetId"})),
    "Relationship": ("object", frozenset({"type", "object", "observedAt", "datasetId"})),
}
_SCALARS = (str, int, float, bool)


def _simple_instance(iri: str, raw: dict[str, Any]) -> JSONObject | None:
    """The commonest instances, checked without the general walk: a Property with a scalar
    value or a Relationship to one URI, beside at most observedAt, unitCode and datasetId,
    all valid and none the NGSI-LD Null, so that every mode treats them alike. Anything
    else is None, and the general rules decide (and word the error). The result is the
    general rules' result, members in the same order."""
    kind = raw.get("type")
    form = _SIMPLE_FORMS.get(kind) if type(kind) is str else None
    if form is None or iri in GEO_ATTRIBUTES or iri in _PROOF_IRIS:
        return None
    member, allowed = form
    if member not in raw or not allowed.issuperset(raw):
        return None
    value = raw[member]
    if value == NULL_URN or not (
        type(value) in _SCALARS if member == "value" else is_uri(value)
    ):
        return None
    inst: JSONObject = {"type": kind, member: value}
    for key, val in raw.items():
        if key == "observedAt":
            if not is_utc_datetime(val):
                return None
        elif key == "unitCode":
            if type(val) is not str or not val or val == NULL_URN:
                return None
        elif key == "datasetId":
            if val == "@none":
                continue
            if not is_uri(val) or val == NULL_URN:
                return None
        else:
            continue  # type and the value member, already placed
        inst[key] = val
    return inst


def _concise_value(iri: str, value: Any, mode: Mode) -> JSONObject:
    """A Property given by its value alone (clause 4.5.2.3); geo attributes need a geometry."""
    if iri in GEO_ATTRIBUTES:
        if isinstance(value, str) or looks_like_geometry(value):
            return {"type": "GeoProperty", "value": check_geometry(value, f"attribute {iri}")}
        raise BadRequestData(f"attribute {iri} must be a GeoProperty")
    return {"type": "Property", "value": _plain_value(iri, value, mode)}


def _plain_value(iri: str, value: Any, mode: Mode) -> Any:
    """A Property value: no Null inside, except in a merge, where Null marks a removed key."""
    if mode is not Mode.MERGE and contains_null(value):
        raise BadRequestData(f"the value of {iri} holds the NGSI-LD Null (clause 5.5.4)")
    return value


_NULL_MARKER: dict[str, Any] = {
    "languageMap": {"@none": NULL_URN},
    "valueList": [NULL_URN],
    "objectList": [{"object": NULL_URN}],
}


def _is_null(member: str, value: object) -> bool:
    """Whether a value member holds its kind's encoding of the NGSI-LD Null."""
    return value == NULL_URN or value == _NULL_MARKER.get(member) or (
        member == "objectList" and value == [NULL_URN]
    )


def _value(iri: str, kind: str, raw: JSONObject, terms: Terms, mode: Mode,
           inst: JSONObject) -> None:
    member = VALUE_MEMBER[kind]
    if member not in raw:
        if not mode.partial:
            raise BadRequestData(f"{kind} {iri} has no {member!r}")
        return
    value = raw[member]
    if value is None:
        raise BadRequestData(f"{kind} {iri} has a JSON null {member!r}")
    if _is_null(member, value):
        if not mode.deletes:
            raise BadRequestData(f"{kind} {iri} must not be the NGSI-LD Null")
        inst[member] = _NULL_MARKER.get(member, NULL_URN)
        return
    if iri in GEO_ATTRIBUTES and kind != "GeoProperty":
        if kind == "Property" and is_geometry(value):
            kind = inst["type"] = "GeoProperty"
        else:
            raise BadRequestData(f"attribute {iri} must be a GeoProperty")
    inst[member] = _check_value(iri, kind, value, terms, mode)


def _check_value(iri: str, kind: str, value: Any, terms: Terms, mode: Mode) -> Any:
    what = f"{kind} {iri}"
    if kind == "GeoProperty":
        return check_geometry(value, what)
    if kind == "Relationship":
        items = value if isinstance(value, list) else [value]
        if not items or not all(is_uri(o) and o != NULL_URN for o in items):
            raise BadRequestData(f"{what} must have a URI object")
        return value
    if kind == "ListRelationship":
        return _object_list(what, value)
    if kind == "LanguageProperty":
        language_map = check_language_map(value, what)
        if contains_null(language_map):
            raise BadRequestData(f"{what} holds the NGSI-LD Null")
        return language_map
    if kind == "VocabProperty":
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v and v != NULL_URN for v in items):
            raise BadRequestData(f"{what} needs a term or a list of terms")
        expanded = [terms.expand(v) for v in items]
        return expanded if isinstance(value, list) else expanded[0]
    if kind == "JsonProperty":
        if not isinstance(value, (dict, list)):
            raise BadRequestData(f"{what} needs a JSON object or array as 'json'")
        return value
    if kind == "ListProperty" and not isinstance(value, list):
        raise BadRequestData(f"{what} needs a valueList array")
    if kind == "Property" and isinstance(value, dict) and value.get("type") in ATTRIBUTE_KINDS:
        raise BadRequestData(f"{what} has an attribute as its value")
    return _plain_value(iri, value, mode if kind == "Property" else Mode.CREATE)


def _object_list(what: str, value: object) -> list[JSONObject]:
    """Clause 4.5.22: bare URIs or ``{"object": URI}`` entries, stored in the second form."""
    if not isinstance(value, list):
        raise BadRequestData(f"{what} needs an objectList array")
    out: list[JSONObject] = []
    for entry in value:
        target = entry.get("object") if isinstance(entry, dict) and set(entry) == {
            "object"} else entry
        if not is_uri(target) or target == NULL_URN:
            raise BadRequestData(f"{what}: objectList entries must be URIs, got {entry!r}")
        out.append({"object": target})
    return out


def _member(iri: str, kind: str | None, key: str, value: object, terms: Terms, mode: Mode,
            inst: JSONObject, *, sub: bool) -> None:
    """A non-reified member of an instance (observedAt, unitCode, datasetId, ...)."""
    what = f"{key} of {iri}"
    if key == "datasetId":
        if value == "@none":
            return  # the default instance (clause 4.5.5)
        if not is_uri(value) or value == NULL_URN:
            raise BadRequestData(f"{what} must be a URI (a datasetId cannot be deleted)")
        inst[key] = value
        return
    if key == "unitCode" and kind in _UNITLESS:
        raise BadRequestData(f"{kind} {iri} is unitless: unitCode is not allowed")
    if key == "objectType" and kind not in _RELATIONSHIPS | {None}:
        raise BadRequestData(f"objectType is only for relationships ({iri})")
    if key in ("valueType", "lang") and kind in _RELATIONSHIPS:
        raise BadRequestData(f"{key} is not allowed in {kind} {iri}")
    if key in _SEALED and (sub or iri not in _PROOF_IRIS):
        raise BadRequestData(f"{key} is only allowed in the ngsildproof Property ({iri})")
    if value is None:
        raise BadRequestData(f"{what} must not be JSON null")
    if value == NULL_URN:
        if not mode.partial or key in _SEALED:
            raise BadRequestData(f"{what} must not be null")
        inst[key] = NULL_URN
        return
    if key in ("observedAt", "expiresAt"):
        inst[key] = check_datetime(value, what)
    elif key in ("objectType", "entityTypeSealed"):
        inst[key] = _type_names(what, value, terms)
    elif key == "entityIdSealed":
        if not is_uri(value):
            raise BadRequestData(f"{what} must be an entity id")
        inst[key] = value
    elif not isinstance(value, str) or not value:
        raise BadRequestData(f"{what} must be a non-empty string")
    elif key == "valueType" and kind == "LanguageProperty" and value not in _LANG_STRING:
        raise BadRequestData(f"the valueType of LanguageProperty {iri} must be langString")
    else:
        inst[key] = value
    if key not in CORE_MEMBERS and key in inst:
        # the stored form does not know this member yet: keep it as a plain sub-property
        inst[terms.expand(key)] = {"type": "Property", "value": inst.pop(key)}


def _type_names(what: str, value: object, terms: Terms) -> str | list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) for v in items):
        raise BadRequestData(f"{what} must be a type name or a list of them")
    expanded = expand_types(items, terms)
    return expanded if isinstance(value, list) else expanded[0]


def _check_proof(iri: str, inst: JSONObject) -> None:
    """Clause 4.5.2.2: ngsildproof is a Property whose value is a Data Integrity proof object."""
    if inst.get("type", "Property") != "Property":
        raise BadRequestData(f"{iri} must be a Property")
    value = inst.get("value")
    if value is not None and value != NULL_URN and not isinstance(value, dict):
        raise BadRequestData(f"the value of {iri} must be a proof object")


def any_instance_value(inst: JSONObject) -> Any:
    """The member that carries an instance's value, by kind."""
    return inst.get(VALUE_MEMBER.get(inst.get("type", ""), "value"))
