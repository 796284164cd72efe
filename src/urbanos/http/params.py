"""Query-string parameters (clause 6.3.x tables) into core queries and render options.

Each endpoint names the parameters it accepts; anything else is an InvalidRequest
(clause 6.3.20), so a typo is reported instead of silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from starlette.datastructures import QueryParams
from starlette.requests import Request

from urbanos.core import geo
from urbanos.core.entity import check_name, is_uri
from urbanos.core.model import LOCATION, NGSI_LD
from urbanos.core.ordering import Ordering, parse_ordering
from urbanos.core.projection import Projection, parse_projection
from urbanos.core.query import attribute_names, linked_depth
from urbanos.core.query.ast import QExpr, TypeAny
from urbanos.core.query.parse import parse_q, parse_scope_q, parse_type_expr
from urbanos.core.render import DEFAULT_DATASET, RenderOptions
from urbanos.core.selection import EntityQuery, check_id_pattern
from urbanos.errors import BadRequestData, InvalidRequest, NgsiLdError, TooManyResults
from urbanos.settings import Settings
from urbanos.types import Terms

RENDER_PARAMS = frozenset({"attrs", "pick", "omit", "options", "format", "lang", "geometryProperty",
                           "datasetId", "join", "joinLevel"})
QUERY_PARAMS = RENDER_PARAMS | frozenset(
    {"id", "idPattern", "type", "q", "scopeQ", "georel", "geometry", "coordinates",
     "geoproperty", "limit", "offset", "count", "local", "csf", "containedBy",
     "entityMap", "splitEntities", "expandValues", "collect", "via", "orderBy", "orderFrom",
     "collation"}
)
_FORMATS = {"normalized", "concise", "keyValues", "simplified"}
_OPTIONS = {"keyValues", "simplified", "concise", "normalized", "sysAttrs"}
#: entity members that are not attributes, so never valid in ``attrs``
_NOT_ATTRIBUTES = frozenset({"id", "type", "scope", "@id", "@type"})
#: system attributes, which alone do not narrow a query (clause 5.7.2.4)
SYSTEM_ATTRIBUTES = frozenset(
    {"createdAt", "modifiedAt", "deletedAt", NGSI_LD + "createdAt", NGSI_LD + "modifiedAt",
     NGSI_LD + "deletedAt"}
)
JOINS = frozenset({"inline", "flat", "@none"})
#: the deepest Linked Entity retrieval served, whatever joinLevel asks
MAX_JOIN_LEVEL = 10


def check_params(params: QueryParams, allowed: Iterable[str]) -> None:
    allowed = set(allowed)
    for name in params:
        if name not in allowed:
            raise InvalidRequest(f"unknown query parameter {name!r}")


def options(params: QueryParams, allowed: set[str]) -> set[str]:
    opts: set[str] = set()
    for raw in params.getlist("options"):
        for opt in raw.split(","):
            opt = opt.strip()
            if opt not in allowed:
                raise InvalidRequest(f"unknown option {opt!r}")
            opts.add(opt)
    return opts


def flag(params: QueryParams, name: str, *,
         error: type[NgsiLdError] = InvalidRequest) -> bool:
    """A true/false parameter, false when absent; any other value raises ``error``."""
    raw = params.get(name)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise error(f"{name} must be true or false, not {raw!r}")
    return raw == "true"


def names(raw: str | None, terms: Terms, *, core: frozenset[str] = frozenset()) -> frozenset[str]:
    """A comma-separated list of attribute names, expanded; ``core`` members kept as they are."""
    out: set[str] = set()
    for item in (raw or "").split(","):
        item = item.strip()
        if not item:
            raise BadRequestData(f"empty name in list {raw!r}")
        if item in core:
            out.add(item)
            continue
        check_name(item)
        out.add(terms.expand(item))
    return frozenset(out)


def attribute_list(items: Iterable[object], terms: Terms) -> frozenset[str]:
    """``attrs``: attribute names only (id, type and scope are entity members)."""
    out: set[str] = set()
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise BadRequestData("attrs must list attribute names")
        name = item.strip()
        if name in _NOT_ATTRIBUTES:
            raise BadRequestData(f"{name!r} is not an attribute name")
        out.add(terms.expand(check_name(name)))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Join:
    """``join`` and ``joinLevel`` (clause 4.5.23); ``mode`` None when no join is asked."""

    mode: str | None = None
    level: int = 1

    @property
    def active(self) -> bool:
        return self.mode in ("inline", "flat")


def parse_join(join: object, level: object) -> Join:
    """Validate join/joinLevel given as query parameters (strings) or body members."""
    if join is None and level is None:
        return Join()
    if join is not None and join not in JOINS:
        raise BadRequestData(f"join must be one of inline, flat or @none, got {join!r}")
    depth = 1
    if level is not None:
        if isinstance(level, str):
            if not level.isdigit():
                raise BadRequestData(f"joinLevel must be a positive integer, got {level!r}")
            level = int(level)
        if not isinstance(level, int) or isinstance(level, bool) or level < 1:
            raise BadRequestData(f"joinLevel must be a positive integer, got {level!r}")
        depth = min(level, MAX_JOIN_LEVEL)
    return Join(join if isinstance(join, str) else None, depth)


def check_linked_depth(depth: int, join: Join, what: str) -> None:
    """Linked Entity paths need a join and may not go deeper than joinLevel (5.7.2.4)."""
    if depth == 0:
        return
    if not join.active:
        raise BadRequestData(f"{what} reaches linked entities, which needs join=inline or flat")
    if depth > join.level:
        raise BadRequestData(
            f"{what} reaches {depth} relationships deep, more than joinLevel {join.level}"
            f" (at most {MAX_JOIN_LEVEL})"
        )


def projection(raw: object, terms: Terms, label: str) -> Projection:
    """A pick/omit value: a string in the 4.21 grammar, or (in a body) a list of terms."""
    if isinstance(raw, list):
        if not raw or not all(isinstance(x, str) for x in raw):
            raise BadRequestData(f"{label} must be a non-empty list of member names")
        raw = ",".join(raw)
    if not isinstance(raw, str):
        raise BadRequestData(f"{label} must be a string")
    return parse_projection(raw, lambda n: terms.expand(check_name(n)), label=label)


def dataset_ids(raw: str) -> frozenset[str]:
    out: set[str] = set()
    for item in raw.split(","):
        item = item.strip()
        if item != DEFAULT_DATASET and not is_uri(item):
            raise BadRequestData(f"datasetId {item!r} is neither a URI nor @none")
        out.add(item)
    return frozenset(out)


def render_options(
    params: QueryParams,
    terms: Terms,
    *,
    geojson: bool = False,
    extra_options: set[str] = frozenset(),  # type: ignore[assignment]
) -> RenderOptions:
    """Representation and projection parameters (clauses 4.5, 4.21, 4.5.23, 6.3.x)."""
    opts = options(params, _OPTIONS | set(extra_options))
    fmt = "normalized"
    if "keyValues" in opts or "simplified" in opts:
        fmt = "keyValues"
    if "concise" in opts:
        if fmt == "keyValues":
            raise InvalidRequest("options keyValues and concise exclude each other")
        fmt = "concise"
    if "format" in params:
        raw = params["format"]
        if raw not in _FORMATS:
            raise InvalidRequest(f"unknown format {raw!r}")
        fmt = "keyValues" if raw == "simplified" else raw
    join = parse_join(params.get("join"), params.get("joinLevel"))
    pick = projection(params["pick"], terms, "pick") if "pick" in params else None
    omit = projection(params["omit"], terms, "omit") if "omit" in params else None
    return build_render_options(
        terms, fmt=fmt, sys_attrs="sysAttrs" in opts, pick=pick, omit=omit,
        attrs=attribute_list(params["attrs"].split(","), terms) if "attrs" in params else None,
        lang=params.get("lang"), geometry_property=params.get("geometryProperty"),
        geojson=geojson, join=join,
        datasets=dataset_ids(params["datasetId"]) if "datasetId" in params else None,
    )


def build_render_options(
    terms: Terms,
    *,
    fmt: str,
    sys_attrs: bool,
    pick: Projection | None,
    omit: Projection | None,
    attrs: frozenset[str] | None,
    lang: str | None,
    geometry_property: str | None,
    geojson: bool,
    join: Join,
    datasets: frozenset[str] | None,
) -> RenderOptions:
    """The checks that tie projection, join and GeoJSON parameters together."""
    if pick is not None and omit is not None:
        raise BadRequestData("pick and omit cannot be used together")
    if attrs is not None and (pick is not None or omit is not None):
        raise BadRequestData("attrs cannot be combined with pick or omit")
    for label, proj in (("pick", pick), ("omit", omit)):
        if proj is not None:
            check_linked_depth(proj.depth, join, label)
    geoprop = LOCATION
    if geometry_property is not None:
        if not geojson:
            raise BadRequestData("geometryProperty needs Accept: application/geo+json")
        geoprop = terms.expand(check_name(geometry_property))
    return RenderOptions(
        fmt=fmt, sys_attrs=sys_attrs, attrs=attrs, pick=pick, omit=omit, lang=lang,
        geoproperty=geoprop, dataset_ids=datasets,
        join=join.mode if join.active else None, join_level=join.level,
    )


def check_q_depth(q: QExpr | None, join: Join) -> None:
    if q is not None:
        check_linked_depth(linked_depth(q), join, "q")


def narrows(
    *, types: object, attrs: frozenset[str] | None, q: QExpr | None, geoq: object, local: bool
) -> bool:
    """Whether a query is narrow enough to run (clause 5.7.2.4): ids alone are not."""
    if local or types is not None or geoq is not None:
        return True
    if attrs is not None and attrs - SYSTEM_ATTRIBUTES:
        return True
    return q is not None and bool(attribute_names(q) - SYSTEM_ATTRIBUTES)


def entity_query(
    params: QueryParams, terms: Terms, settings: Settings, *, require_filter: bool = True
) -> EntityQuery:
    """GET /entities parameters (clause 6.4.3.2) into an EntityQuery; 400 on anything wrong."""
    ids = None
    if "id" in params:
        ids = tuple(i.strip() for i in params["id"].split(","))
        for i in ids:
            if not is_uri(i):
                raise BadRequestData(f"id {i!r} is not a URI")
    id_pattern = params.get("idPattern")
    if id_pattern is not None:
        check_id_pattern(id_pattern)
    types = parse_type_expr(params["type"], terms.expand) if "type" in params else None
    attrs = attribute_list(params["attrs"].split(","), terms) if "attrs" in params else None
    expand_values: tuple[str, ...] = ()
    if "expandValues" in params:
        expand_values = tuple(check_name(n.strip()) for n in params["expandValues"].split(","))
    q = None
    if params.get("q"):
        q = parse_q(params["q"], terms.expand, expand_values=expand_values)
    scope_q = parse_scope_q(params["scopeQ"]) if "scopeQ" in params else None
    geoq = geo.parse_geoq(
        params.get("georel"), params.get("geometry"), params.get("coordinates"),
        params.get("geoproperty"), terms.expand,
    )
    if params.get("csf"):
        parse_q(params["csf"], terms.expand)  # only checked: no context sources are asked
    local = flag(params, "local")
    if isinstance(types, TypeAny) and params.get("local") == "false":
        raise BadRequestData("type=* selects every type only together with local=true or unset")
    check_q_depth(q, parse_join(params.get("join"), params.get("joinLevel")))
    if require_filter and not narrows(types=types, attrs=attrs, q=q, geoq=geoq, local=local):
        raise BadRequestData(
            "too wide a query: give a type, a non-system attribute in attrs or q, a geo-query"
            " or local=true"
        )
    order = None
    if "orderBy" in params:
        order = parse_ordering(
            params["orderBy"], terms.expand, collation=params.get("collation"),
            coordinates=params.get("orderFrom"),
        )
    limit, offset, count = paging(params, settings)
    return EntityQuery(
        ids=ids, id_pattern=None if ids else id_pattern, types=types, attrs=attrs, q=q,
        scope_q=scope_q, geo=geoq, lang=params.get("lang"), order=order, limit=limit,
        offset=offset, count=count,
    )


def paging(params: QueryParams, settings: Settings) -> tuple[int, int, bool]:
    limit = _int(params, "limit", settings.default_limit)
    offset = _int(params, "offset", 0)
    count = flag(params, "count")
    if limit < 0 or offset < 0:
        raise BadRequestData("limit and offset must not be negative")
    if limit == 0 and not count:
        raise BadRequestData("limit=0 is only allowed together with count=true")
    if limit > settings.max_limit:
        raise TooManyResults(f"limit {limit} exceeds the maximum of {settings.max_limit}")
    return limit, offset, count


def _int(params: QueryParams, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise BadRequestData(f"{name} must be an integer, got {raw!r}") from exc


def with_page(query: EntityQuery, limit: int, offset: int) -> EntityQuery:
    return replace(query, limit=limit, offset=offset)


__all__ = [
    "QUERY_PARAMS",
    "RENDER_PARAMS",
    "Join",
    "Ordering",
    "attribute_list",
    "build_render_options",
    "check_params",
    "entity_query",
    "flag",
    "names",
    "options",
    "paging",
    "parse_join",
    "render_options",
]


def uri_in_path(request: Request, param: str, what: str) -> str:
    """The resource id a path parameter names (``%2F`` kept by the path normalizer), which
    must be a URI; 400 BadRequestData naming ``what`` otherwise."""
    raw = request.path_params[param].replace("%2F", "/")
    if not is_uri(raw):
        raise BadRequestData(f"{what} id must be a URI, got {raw!r}")
    return raw
