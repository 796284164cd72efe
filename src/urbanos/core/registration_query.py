"""Query Context Source Registrations (clause 5.10.2) as one pure predicate.

``parse_registration_query`` reads the query parameters (binding 6.8.3.2) with the parsers
every other query uses (``q``/``csf`` clause 4.9, geoQ 4.10, temporal 4.11, ``type`` 4.17,
``scopeQ`` 4.19); ``RegistrationQuery.matches`` decides for one stored registration
document. What clause 5.10.2.4 asks, condition by condition:

* the entity specification (``type``, ``id``, ``idPattern``) and the attribute names match
  one RegistrationInfo of ``information`` (an EntityInfo-less or name-less RegistrationInfo
  matches; clause 5.12). The attribute names are those of ``attrs`` *and* of ``q`` and the
  geo-query: ``q`` is a query about entities, "used here to identify relevant attributes"
  (5.10.2.3), not a filter on the registration itself;
* ``csf``, the context source filter, is evaluated with the q-language on the
  registration's own members and Context Source Properties (``endpoint``, ``mode``,
  ``registrationName``, any property the registrant added...), as an entity's attributes;
* the geo-query is matched against the registration's GeoProperty it names (``location``
  by default, ``observationSpace``, ``operationSpace``): it matches when the geometry
  matches directly or *may contain* matching locations (a region overlapping a ``within``
  polygon may hold entities within it); a registration without that member never matches;
* without a temporal query only registrations of latest information (no
  ``observationInterval``/``managementInterval``) count; with one, ``observedAt`` (the
  default ``timeproperty``) is matched against ``observationInterval`` and
  ``createdAt``/``modifiedAt``/``deletedAt`` against ``managementInterval``, endpoints
  included; a registration without the interval does not match;
* ``scopeQ`` is matched against the registration's ``scope``.

At least one of ``type``, ``attrs``, ``q`` or a geo-query is needed (5.10.2.4: else
BadRequestData, "too wide"). ``id``/``idPattern``, ``csf``, ``scopeQ`` and a temporal query
narrow a query as much and are accepted alone too; ``type=*`` asks for every registration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from urbanos.core import geo
from urbanos.core.entity import check_entity_id
from urbanos.core.jsonld import core_term_map
from urbanos.core.model import GEO_ATTRIBUTES, NGSI_LD
from urbanos.core.query import attribute_names, matches_q, matches_scope, matches_type
from urbanos.core.query.ast import QExpr, ScopeExpr, TypeExpr
from urbanos.core.query.parse import parse_q, parse_scope_q, parse_type_expr
from urbanos.core.registration_info import covers
from urbanos.core.selection import check_id_pattern
from urbanos.core.temporal import TemporalQuery, parse_temporal_query, to_micros
from urbanos.core.validation import check_name
from urbanos.errors import BadRequestData
from urbanos.types import JSONObject, Terms

__all__ = ["PARAMS", "RegistrationQuery", "parse_registration_query"]

#: the query parameters of Query Context Source Registrations this module reads
PARAMS = frozenset({"id", "idPattern", "type", "attrs", "q", "csf", "georel", "geometry",
                    "coordinates", "geoproperty", "timerel", "timeAt", "endTimeAt",
                    "timeproperty", "scopeQ"})
_INTERVALS = ("observationInterval", "managementInterval")
#: registration members kept beside the attributes of the view ``csf`` is evaluated on
_TOP = frozenset({"id", "type", "createdAt", "modifiedAt", "deletedAt"})
#: the kinds of NGSI-LD attribute a Context Source Property may be given as
_KINDS = frozenset({"Property", "Relationship", "GeoProperty", "LanguageProperty",
                    "ListProperty", "ListRelationship", "JsonProperty", "VocabProperty"})


@dataclass(frozen=True)
class _Geo:
    """A geo-query, and the wider one that tells whether a geometry *may contain*
    matching locations (``negated``: it may unless the wider one holds)."""

    query: geo.GeoQuery
    wider: geo.GeoQuery | None = field(default=None)
    negated: bool = False

    @classmethod
    def of(cls, query: geo.GeoQuery) -> _Geo:
        if query.georel in ("within", "overlaps"):  # a region touching the query area
            return cls(query, replace(query, georel="intersects"))
        if query.georel in ("contains", "equals"):  # a region around the query area
            return cls(query, replace(query, georel="contains"))
        if query.georel == "disjoint":  # a region not inside the query area
            return cls(query, replace(query, georel="within"), negated=True)
        return cls(query)  # intersects, near: the direct test is the possible one

    def matches(self, value: object) -> bool:
        if self.query.matches(value):
            return True
        if self.wider is None:
            return False
        return self.wider.matches(value) is not self.negated


@dataclass(frozen=True)
class RegistrationQuery:
    """A validated Query Context Source Registrations; names are expanded IRIs."""

    ids: frozenset[str] | None = None
    id_pattern: str | None = None
    types: TypeExpr | None = None
    attrs: frozenset[str] | None = None
    q: QExpr | None = None
    csf: QExpr | None = None
    geo: geo.GeoQuery | None = None
    temporal: TemporalQuery | None = None
    scope_q: ScopeExpr | None = None
    _geo: _Geo | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_geo", None if self.geo is None else _Geo.of(self.geo))

    @property
    def narrows(self) -> bool:
        """Whether something restricts the answer (an unrestricted query is too wide)."""
        return any(x is not None for x in (
            self.ids, self.id_pattern, self.types, self.attrs, self.q, self.csf, self.geo,
            self.temporal, self.scope_q))

    @property
    def attribute_names(self) -> frozenset[str] | None:
        """The attributes RegistrationInfo names are matched against: ``attrs``, those of
        ``q`` and the geo-query's GeoProperty (5.10.2.4); None = not restricted (a ``q``
        on system attributes only names none)."""
        names = set(self.attrs or ())
        if self.q is not None:
            names |= attribute_names(self.q)
        if self.geo is not None:
            names.add(self.geo.geoproperty)
        return frozenset(names) if names else None

    def matches(self, doc: Mapping[str, Any]) -> bool:
        """Whether a stored registration document meets every condition asked."""
        if not self._information(doc):
            return False
        if self._geo is not None:
            value = _geometry(doc, self._geo.query.geoproperty)
            if value is None or not self._geo.matches(value):
                return False
        if not _in_time(doc, self.temporal):
            return False
        if self.scope_q is not None and not matches_scope(self.scope_q, _scopes(doc)):
            return False
        return self.csf is None or matches_q(self.csf, _view(doc))

    def _information(self, doc: Mapping[str, Any]) -> bool:
        ids = None if self.ids is None else set(self.ids)
        attrs = self.attribute_names
        attrs_set = None if attrs is None else set(attrs)
        for info in doc["information"]:
            entities = info.get("entities")
            if entities and self.types is not None:
                types = self.types
                entities = [e for e in entities if matches_type(types, _types_of(e))]
                if not entities:
                    continue
                info = {**info, "entities": entities}
            if covers(info, ids=ids, types=None, attrs=attrs_set, id_pattern=self.id_pattern):
                return True
        return False


# --------------------------------------------------------------------------- parsing


def _given(params: Mapping[str, str], name: str) -> str | None:
    """A parameter's value; an empty one counts as absent, as clients send ``name=``."""
    value = params.get(name)
    return None if value is None or value == "" else value


def parse_registration_query(params: Mapping[str, str], terms: Terms) -> RegistrationQuery:
    """The query parameters of Query Context Source Registrations (binding 6.8.3.2), names
    expanded with the request's ``terms``; BadRequestData for anything invalid and for a
    query without any restriction (5.10.2.4)."""
    expand = terms.expand
    ids = None
    if "id" in params:
        ids = frozenset(check_entity_id(i.strip()) for i in params["id"].split(","))
    id_pattern = params.get("idPattern")
    if id_pattern is not None:
        check_id_pattern(id_pattern)
    types = None
    if "type" in params:
        if not params["type"].strip():
            raise BadRequestData("type must name at least one entity type")
        types = parse_type_expr(params["type"], expand)
    attrs = None
    if "attrs" in params:
        attrs = frozenset(expand(check_name(a.strip(), "attribute name in attrs"))
                          for a in params["attrs"].split(","))
    q = parse_q(text, expand) if (text := _given(params, "q")) else None
    csf = parse_q(text, expand) if (text := _given(params, "csf")) else None
    geoq = geo.parse_geoq(params.get("georel"), params.get("geometry"),
                          params.get("coordinates"), params.get("geoproperty"), expand)
    scope_q = parse_scope_q(text) if (text := _given(params, "scopeQ")) else None
    temporal = parse_temporal_query(_given(params, "timerel"), _given(params, "timeAt"),
                                    _given(params, "endTimeAt"), _given(params, "timeproperty"))
    query = RegistrationQuery(
        ids=ids, id_pattern=id_pattern, types=types, attrs=attrs, q=q, csf=csf, geo=geoq,
        temporal=temporal if temporal.timerel is not None else None, scope_q=scope_q)
    if not query.narrows:
        raise BadRequestData(
            "too wide a query: give a type (type=* for every registration), attrs, q, a "
            "geo-query or another filter")
    return query


# --------------------------------------------------------------------------- matching


def _types_of(entity: Mapping[str, Any]) -> list[str]:
    kind = entity["type"]
    return [kind] if isinstance(kind, str) else list(kind)


def _geometry(doc: Mapping[str, Any], prop: str) -> object | None:
    """The registration's GeoProperty ``prop`` (an IRI) as a GeoJSON geometry, if any."""
    if prop in GEO_ATTRIBUTES:
        return doc.get(prop.removeprefix(NGSI_LD))
    value = doc.get(prop)  # a Context Source Property holding a geometry
    if isinstance(value, dict) and value.get("type") == "GeoProperty":
        value = value.get("value")
    return value


def _in_time(doc: Mapping[str, Any], temporal: TemporalQuery | None) -> bool:
    if temporal is None:  # latest information only
        return not any(k in doc for k in _INTERVALS)
    interval = doc.get(_INTERVALS[0] if temporal.timeproperty == "observedAt" else _INTERVALS[1])
    if not isinstance(interval, dict):
        return False
    start = to_micros(interval["startAt"])
    end = to_micros(interval["endAt"]) if "endAt" in interval else None
    at = temporal.time_at
    assert at is not None
    if temporal.timerel == "before":
        return start <= at
    if temporal.timerel == "after":
        return end is None or end >= at
    until = temporal.end_time_at
    assert until is not None
    return start <= until and (end is None or end >= at)


def _scopes(doc: Mapping[str, Any]) -> list[str] | None:
    scope = doc.get("scope")
    if scope is None:
        return None
    return [scope] if isinstance(scope, str) else list(scope)


@lru_cache(maxsize=256)
def _member_iri(name: str) -> str:
    return core_term_map().expand(name)


def _view(doc: Mapping[str, Any]) -> JSONObject:
    """The registration as an entity the q-language evaluates: each member and Context
    Source Property an attribute under its IRI (members are kept under their short names,
    properties under their IRIs), a plain value as a Property."""
    attrs: JSONObject = {}
    view: JSONObject = {"attrs": attrs}
    for key, value in doc.items():
        if key.startswith("_"):
            continue
        if key in _TOP:
            view[key] = value
            continue
        iri = key if ":" in key else _member_iri(key)
        if isinstance(value, dict) and value.get("type") in _KINDS:
            attrs[iri] = [value]
        else:
            attrs[iri] = [{"type": "Property", "value": value}]
    return view
