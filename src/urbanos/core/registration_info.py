"""What a registration covers: its ``information`` (clauses 5.2.9, 5.2.10, 5.2.8) and its
``operations`` (clause 4.20), as pure helpers for ``core.registration`` and the federation.

``information`` is stored with entity types and attribute names expanded to IRIs, in the
shape the registrant gave (an EntityInfo ``type`` stays a string or an array), so it is
compacted again under any reader's @context and matched against expanded query terms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from urbanos.core.entity import check_attribute_name, expand_types
from urbanos.core.selection import check_id_pattern, compile_id_pattern
from urbanos.core.validation import is_uri
from urbanos.errors import BadRequestData
from urbanos.types import JSONObject, Terms

__all__ = [
    "GROUPS",
    "OPERATIONS",
    "WRITE_OPERATIONS",
    "check_exclusive",
    "check_operations",
    "conflicts",
    "covers",
    "entity_covers",
    "expand_operations",
    "parse_information",
    "render_information",
    "supports",
]

#: the operations of clause 4.20 (Table 4.20-1) a registration may list one by one
OPERATIONS = frozenset({
    "createEntity", "updateEntity", "appendAttrs", "updateAttrs", "deleteAttrs", "deleteEntity",
    "createBatch", "upsertBatch", "updateBatch", "deleteBatch", "upsertTemporal",
    "appendAttrsTemporal", "deleteAttrsTemporal", "updateAttrsTemporal",
    "updateAttrInstanceTemporal", "deleteAttrInstanceTemporal", "deleteTemporal", "mergeEntity",
    "replaceEntity", "replaceAttrs", "mergeBatch", "purgeEntity", "retrieveEntity",
    "queryEntity", "queryBatch", "retrieveTemporal", "queryTemporal", "retrieveEntityTypes",
    "retrieveEntityTypeDetails", "retrieveEntityTypeInfo", "retrieveAttrTypes",
    "retrieveAttrTypeDetails", "retrieveAttrTypeInfo", "createSubscription",
    "updateSubscription", "retrieveSubscription", "querySubscription", "deleteSubscription",
    "retrieveEntityMap", "updateEntityMap", "deleteEntityMap", "createEntityMapQueryEntity",
})
_DISCOVERY = ("retrieveEntityTypes", "retrieveEntityTypeDetails", "retrieveEntityTypeInfo",
              "retrieveAttrTypes", "retrieveAttrTypeDetails", "retrieveAttrTypeInfo")
_SUBSCRIPTIONS = ("createSubscription", "updateSubscription", "retrieveSubscription",
                  "querySubscription", "deleteSubscription")
_ENTITY_MAPS = ("retrieveEntityMap", "updateEntityMap", "deleteEntityMap",
                "createEntityMapQueryEntity")
#: the operation groups (Table 4.20-2); ``associationOps`` is the v1.9 name some send
GROUPS: dict[str, frozenset[str]] = {
    "federationOps": frozenset(("retrieveEntity", "queryEntity", "queryBatch", *_DISCOVERY,
                                *_SUBSCRIPTIONS, *_ENTITY_MAPS)),
    "associationOps": frozenset(("retrieveEntity", "queryEntity", "queryBatch", *_DISCOVERY,
                                 *_SUBSCRIPTIONS)),
    "updateOps": frozenset(("updateEntity", "updateAttrs", "replaceEntity", "replaceAttrs")),
    "retrieveOps": frozenset(("retrieveEntity", "queryEntity")),
    "redirectionOps": frozenset(("createEntity", "updateEntity", "appendAttrs", "updateAttrs",
                                 "deleteAttrs", "deleteEntity", "mergeEntity", "replaceEntity",
                                 "replaceAttrs", "retrieveEntity", "queryEntity", "purgeEntity",
                                 *_DISCOVERY, *_ENTITY_MAPS)),
}
#: operations that change context data: an auxiliary source only serves reads (5.9.2.4)
WRITE_OPERATIONS = frozenset({
    "createEntity", "updateEntity", "appendAttrs", "updateAttrs", "deleteAttrs", "deleteEntity",
    "createBatch", "upsertBatch", "updateBatch", "deleteBatch", "upsertTemporal",
    "appendAttrsTemporal", "deleteAttrsTemporal", "updateAttrsTemporal",
    "updateAttrInstanceTemporal", "deleteAttrInstanceTemporal", "deleteTemporal", "mergeEntity",
    "replaceEntity", "replaceAttrs", "mergeBatch", "purgeEntity",
})
_INFO = frozenset({"entities", "propertyNames", "relationshipNames"})
_ENTITY_INFO = frozenset({"id", "idPattern", "type"})
_NAMES = ("propertyNames", "relationshipNames")


def _fail(message: str) -> BadRequestData:
    return BadRequestData(message)


# --------------------------------------------------------------------------- operations


def check_operations(value: object) -> list[str]:
    """``operations``: a non-empty array of operation or group names, kept as given."""
    if not isinstance(value, list) or not value:
        raise _fail("operations must be a non-empty array of operation names")
    for name in value:
        if not isinstance(name, str) or (name not in OPERATIONS and name not in GROUPS):
            raise _fail(f"operations: {name!r} is neither an operation nor an operation group")
    return list(dict.fromkeys(value))


def expand_operations(names: Iterable[str]) -> frozenset[str]:
    """The single operations a list of operation and group names stands for."""
    out: set[str] = set()
    for name in names:
        out |= GROUPS.get(name, {name})
    return frozenset(out)


# --------------------------------------------------------------------------- information


def _entity_info(value: object, terms: Terms) -> JSONObject:
    if not isinstance(value, dict):
        raise _fail("information: each member of entities must be an EntityInfo object")
    extra = sorted(k for k in value if k not in _ENTITY_INFO)
    if extra:
        raise _fail(f"information: EntityInfo has unknown member(s) {', '.join(extra)}")
    out: JSONObject = {}
    if "id" in value:
        if not is_uri(value["id"]):
            raise _fail(f"information: entity id {value['id']!r} is not a URI")
        out["id"] = value["id"]
    if "idPattern" in value:
        pattern = value["idPattern"]
        if not isinstance(pattern, str) or not pattern:
            raise _fail("information: idPattern must be a non-empty string")
        check_id_pattern(pattern)
        out["idPattern"] = pattern
    if "type" not in value:
        raise _fail("information: each EntityInfo needs a type")
    raw = value["type"]
    if not isinstance(raw, str | list):
        raise _fail("information: an EntityInfo type is a name or an array of names")
    iris = expand_types(raw, terms)
    out["type"] = iris[0] if isinstance(raw, str) else iris
    return out


def _names(value: object, terms: Terms, what: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _fail(f"information: {what} must be a non-empty array of names")
    out: list[str] = []
    for name in value:
        iri = check_attribute_name(name, terms, what)
        if iri not in out:
            out.append(iri)
    return out


def parse_information(value: object, terms: Terms) -> list[JSONObject]:
    """``information``: a non-empty array of RegistrationInfo (5.2.10), names expanded."""
    if not isinstance(value, list) or not value:
        raise _fail("information must be a non-empty array of RegistrationInfo")
    out: list[JSONObject] = []
    for item in value:
        if not isinstance(item, dict):
            raise _fail("information: each RegistrationInfo must be an object")
        extra = sorted(k for k in item if k not in _INFO)
        if extra:
            raise _fail(f"information: unknown member(s) {', '.join(extra)}")
        if not any(k in item for k in _INFO):
            raise _fail("information: a RegistrationInfo needs entities, propertyNames "
                        "or relationshipNames")
        info: JSONObject = {}
        if "entities" in item:
            entities = item["entities"]
            if not isinstance(entities, list) or not entities:
                raise _fail("information: entities must be a non-empty array of EntityInfo")
            info["entities"] = [_entity_info(e, terms) for e in entities]
        for key in _NAMES:
            if key in item:
                info[key] = _names(item[key], terms, key)
        out.append(info)
    return out


def check_exclusive(information: list[JSONObject]) -> None:
    """Clause 4.3.6.3: an exclusive registration names entity ids (no idPattern, no group
    of a type) and the attributes the source alone holds for them."""
    for info in information:
        entities = info.get("entities")
        if not entities:
            raise _fail("an exclusive registration must name the entities (by id)")
        for entity in entities:
            if "idPattern" in entity:
                raise _fail("idPattern is not allowed in an exclusive registration")
            if "id" not in entity:
                raise _fail("an exclusive registration must give each entity's id")
        if not any(key in info for key in _NAMES):
            raise _fail("an exclusive registration must name propertyNames or "
                        "relationshipNames")


def render_information(information: Iterable[Mapping[str, Any]], terms: Terms) -> list[JSONObject]:
    out: list[JSONObject] = []
    for info in information:
        shown: JSONObject = {}
        if "entities" in info:
            shown["entities"] = [_render_entity(e, terms) for e in info["entities"]]
        for key in _NAMES:
            if key in info:
                shown[key] = [terms.compact(n) for n in info[key]]
        out.append(shown)
    return out


def _render_entity(entity: Mapping[str, Any], terms: Terms) -> JSONObject:
    out = dict(entity)
    kind = entity["type"]
    out["type"] = terms.compact(kind) if isinstance(kind, str) else [terms.compact(t) for t in kind]
    return out


# --------------------------------------------------------------------------- matching


def _types_of(entity: Mapping[str, Any]) -> set[str]:
    kind = entity["type"]
    return {kind} if isinstance(kind, str) else set(kind)


def entity_covers(entity: Mapping[str, Any], ids: set[str] | None, types: set[str] | None,
                  id_pattern: str | None) -> bool:
    """Whether one EntityInfo may name the entities asked (expanded; None = any)."""
    if types is not None and not (_types_of(entity) & types):
        return False
    if "id" in entity:
        if ids is not None:
            return entity["id"] in ids
        return id_pattern is None or compile_id_pattern(id_pattern).search(entity["id"]) is not None
    if "idPattern" in entity and ids is not None:
        regex = compile_id_pattern(entity["idPattern"])
        return any(regex.search(i) is not None for i in ids)
    return True  # a group of the type (or a pattern two patterns may share)


def covers(info: Mapping[str, Any], *, ids: set[str] | None, types: set[str] | None,
           attrs: set[str] | None, id_pattern: str | None = None) -> bool:
    """Whether one RegistrationInfo may hold the entities and attributes asked (expanded
    IRIs; None = not restricted). No entities = any entity; no names = every attribute."""
    entities = info.get("entities")
    if entities and not any(entity_covers(e, ids, types, id_pattern) for e in entities):
        return False
    if attrs is None:
        return True
    names = [n for key in _NAMES for n in info.get(key, ())]
    return not names or bool(attrs.intersection(names))


def conflicts(new: Mapping[str, Any], existing: Mapping[str, Any]) -> bool:
    """Clause 4.3.6.3: once an exclusive registration exists, no further exclusive or
    redirect registration may cover one of its entity ids with one of its attributes (the
    service answers 409 AlreadyExists)."""
    if existing.get("mode") != "exclusive" or new.get("mode") not in ("exclusive", "redirect"):
        return False
    for info in existing["information"]:
        names = {n for key in _NAMES for n in info.get(key, ())}
        for entity in info["entities"]:
            ids, types = {entity["id"]}, _types_of(entity)
            if any(covers(o, ids=ids, types=types, attrs=names) for o in new["information"]):
                return True
    return False


def supports(doc: Mapping[str, Any], operation: str) -> bool:
    """Whether a registration's ``operations`` (groups expanded) include ``operation``."""
    return operation in expand_operations(doc.get("operations", ("federationOps",)))
