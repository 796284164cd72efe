"""The Query data type of POST /entityOperations/query (clause 5.2.23) into an EntityQuery."""

from __future__ import annotations

from dataclasses import dataclass

from urbanos.core import geo
from urbanos.core.entity import is_uri
from urbanos.core.ordering import Ordering, parse_ordering
from urbanos.core.projection import Projection
from urbanos.core.query.parse import parse_q, parse_scope_q, parse_type_expr
from urbanos.core.selection import EntityQuery, EntitySelector, check_id_pattern
from urbanos.errors import BadRequestData
from urbanos.http.params import (
    Join,
    attribute_list,
    check_q_depth,
    dataset_ids,
    narrows,
    parse_join,
    projection,
)
from urbanos.types import JSON, Terms

_MEMBERS = {"type", "entities", "attrs", "q", "geoQ", "scopeQ", "lang", "temporalQ", "csf",
            "@context", "local", "pick", "omit", "datasetId", "join", "joinLevel", "ordering",
            "geometryProperty", "expandValues", "containedBy"}


@dataclass(frozen=True, slots=True)
class BodyQuery:
    """What a Query body asks: the selection, and the projection of what it selects."""

    query: EntityQuery
    attrs: frozenset[str] | None
    pick: Projection | None
    omit: Projection | None
    join: Join
    datasets: frozenset[str] | None
    lang: str | None
    geometry_property: str | None


def query_from_body(
    body: JSON, terms: Terms, *, limit: int, offset: int, count: bool, local: bool = False
) -> BodyQuery:
    """Validate a Query (Table 5.2.23-1); ``local`` is the URL's local flag."""
    if not isinstance(body, dict):
        raise BadRequestData("a Query must be a JSON object")
    if body.get("type") != "Query":
        raise BadRequestData('a Query needs "type": "Query"')
    unknown = set(body) - _MEMBERS
    if unknown:
        raise BadRequestData(f"unknown Query members: {', '.join(sorted(unknown))}")
    if "temporalQ" in body:
        raise BadRequestData("temporalQ belongs to Query Temporal Evolution of Entities only")
    selectors = None
    if "entities" in body:
        raw = body["entities"]
        if not isinstance(raw, list) or not raw:
            raise BadRequestData("Query entities must be a non-empty array")
        selectors = tuple(_selector(e, terms) for e in raw)
    attrs = None
    if "attrs" in body:
        raw_attrs = body["attrs"]
        if not isinstance(raw_attrs, list) or not raw_attrs:
            raise BadRequestData("Query attrs must be a non-empty array of names")
        attrs = attribute_list(raw_attrs, terms)
    expand_values = _strings(body, "expandValues")
    q = None
    if "q" in body:
        q = parse_q(_text(body, "q"), terms.expand, expand_values=expand_values)
    scope_q = parse_scope_q(_text(body, "scopeQ")) if "scopeQ" in body else None
    if "csf" in body:
        parse_q(_text(body, "csf"), terms.expand)
    geoq = None
    if "geoQ" in body:
        g = body["geoQ"]
        if not isinstance(g, dict):
            raise BadRequestData("geoQ must be an object")
        geoq = geo.parse_geoq(
            g.get("georel"), g.get("geometry"), g.get("coordinates"), g.get("geoproperty"),
            terms.expand,
        )
        if geoq is None:
            raise BadRequestData("geoQ needs georel, geometry and coordinates")
    body_local = body.get("local", False)
    if not isinstance(body_local, bool):
        raise BadRequestData("Query local must be a boolean")
    join = parse_join(body.get("join"), body.get("joinLevel"))
    check_q_depth(q, join)
    if not narrows(types=selectors, attrs=attrs, q=q, geoq=geoq, local=local or body_local):
        raise BadRequestData(
            "too wide a query: give entities, a non-system attribute in attrs or q, a geoQ"
            " or local"
        )
    lang = body.get("lang")
    if lang is not None and not isinstance(lang, str):
        raise BadRequestData("Query lang must be a string")
    geometry_property = body.get("geometryProperty")
    if geometry_property is not None and not isinstance(geometry_property, str):
        raise BadRequestData("Query geometryProperty must be a string")
    datasets = None
    if "datasetId" in body:
        datasets = dataset_ids(",".join(_strings(body, "datasetId")))
    query = EntityQuery(
        selectors=selectors, attrs=attrs, q=q, scope_q=scope_q, geo=geoq, lang=lang,
        order=_ordering(body.get("ordering"), terms), limit=limit, offset=offset, count=count,
    )
    return BodyQuery(
        query=query, attrs=attrs,
        pick=projection(body["pick"], terms, "pick") if "pick" in body else None,
        omit=projection(body["omit"], terms, "omit") if "omit" in body else None,
        join=join, datasets=datasets, lang=lang, geometry_property=geometry_property,
    )


def _text(body: dict[str, JSON], name: str) -> str:
    value = body[name]
    if not isinstance(value, str):
        raise BadRequestData(f"Query {name} must be a string")
    return value


def _strings(body: dict[str, JSON], name: str) -> tuple[str, ...]:
    """A member that is a string or a non-empty array of strings."""
    if name not in body:
        return ()
    value = body[name]
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise BadRequestData(f"Query {name} must be a string or an array of strings")
    return tuple(items)


def _ordering(raw: JSON, terms: Terms) -> Ordering | None:
    """OrderingParams (clause 5.2.43): orderBy, collation and a distance reference."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BadRequestData("ordering must be an object")
    order_by = raw.get("orderBy")
    if isinstance(order_by, str):
        order_by = [order_by]
    if not isinstance(order_by, list) or not order_by:
        raise BadRequestData("ordering orderBy must be a non-empty array of strings")
    coordinates = raw.get("coordinates")
    if coordinates is not None and not isinstance(coordinates, list):
        raise BadRequestData("ordering coordinates must be a JSON array")
    geometry = raw.get("geometry")
    if geometry is not None and not isinstance(geometry, str):
        raise BadRequestData("ordering geometry must be a string")
    collation = raw.get("collation")
    if collation is not None and not isinstance(collation, str):
        raise BadRequestData("ordering collation must be a string")
    return parse_ordering(
        order_by, terms.expand, collation=collation, coordinates=coordinates, geometry=geometry
    )


def _selector(raw: JSON, terms: Terms) -> EntitySelector:
    """EntitySelector (clause 5.2.33): type is mandatory; id (one or many) beats idPattern."""
    if not isinstance(raw, dict):
        raise BadRequestData("each Query entities entry must be an object")
    if "type" not in raw:
        raise BadRequestData("each Query entities entry needs a type")
    if not isinstance(raw["type"], str) or not raw["type"]:
        raise BadRequestData("type must be a non-empty string")
    types = parse_type_expr(raw["type"], terms.expand)
    ids = None
    if "id" in raw:
        value = raw["id"]
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(i, str) and is_uri(i) for i in items):
            raise BadRequestData(f"entity id {value!r} must be a URI or an array of URIs")
        ids = tuple(items)
    pattern = raw.get("idPattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise BadRequestData("idPattern must be a string")
        check_id_pattern(pattern)
    return EntitySelector(ids=ids, id_pattern=None if ids else pattern, types=types)
