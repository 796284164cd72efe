"""The Query data type of POST /entityOperations/query (clause 5.2.23) into an EntityQuery."""

from __future__ import annotations

from urbanos.core import geo
from urbanos.core.entity import check_name, is_uri
from urbanos.core.query.parse import parse_q, parse_scope_q, parse_type_expr
from urbanos.core.selection import EntityQuery, EntitySelector, check_id_pattern
from urbanos.errors import BadRequestData
from urbanos.types import JSON, Terms

_MEMBERS = {"type", "entities", "attrs", "q", "geoQ", "scopeQ", "lang", "temporalQ", "csf",
            "@context", "local", "pick", "omit", "datasetId", "join", "joinLevel"}


def query_from_body(
    body: JSON, terms: Terms, *, limit: int, offset: int, count: bool
) -> tuple[EntityQuery, frozenset[str] | None]:
    """The query and the attribute projection it asks for."""
    if not isinstance(body, dict):
        raise BadRequestData("a Query must be a JSON object")
    if body.get("type") != "Query":
        raise BadRequestData('a Query needs "type": "Query"')
    unknown = set(body) - _MEMBERS
    if unknown:
        raise BadRequestData(f"unknown Query members: {', '.join(sorted(unknown))}")
    selectors = None
    if "entities" in body:
        raw = body["entities"]
        if not isinstance(raw, list) or not raw:
            raise BadRequestData("Query entities must be a non-empty array")
        selectors = tuple(_selector(e, terms) for e in raw)
    attrs = None
    if "attrs" in body:
        raw_attrs = body["attrs"]
        if not isinstance(raw_attrs, list) or not all(isinstance(a, str) for a in raw_attrs):
            raise BadRequestData("Query attrs must be an array of names")
        attrs = frozenset(terms.expand(check_name(a)) for a in raw_attrs)
    q = parse_q(_text(body, "q"), terms.expand) if "q" in body else None
    scope_q = parse_scope_q(_text(body, "scopeQ")) if "scopeQ" in body else None
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
    if selectors is None and attrs is None and q is None and geoq is None and scope_q is None:
        raise BadRequestData("a Query needs entities, attrs, q, geoQ or scopeQ")
    query = EntityQuery(
        selectors=selectors, attrs=attrs, q=q, scope_q=scope_q, geo=geoq,
        lang=body.get("lang") if isinstance(body.get("lang"), str) else None,
        limit=limit, offset=offset, count=count,
    )
    return query, attrs


def _text(body: dict[str, JSON], name: str) -> str:
    value = body[name]
    if not isinstance(value, str):
        raise BadRequestData(f"Query {name} must be a string")
    return value


def _selector(raw: JSON, terms: Terms) -> EntitySelector:
    if not isinstance(raw, dict):
        raise BadRequestData("each Query entities entry must be an object")
    eid = raw.get("id")
    if eid is not None and not is_uri(eid):
        raise BadRequestData(f"entity id {eid!r} is not a URI")
    pattern = raw.get("idPattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise BadRequestData("idPattern must be a string")
        check_id_pattern(pattern)
    types = None
    if "type" in raw:
        if not isinstance(raw["type"], str):
            raise BadRequestData("type must be a string")
        types = parse_type_expr(raw["type"], terms.expand)
    return EntitySelector(id=eid, id_pattern=pattern, types=types)
