"""Query-string parameters (clause 6.3.x tables) into core queries and render options.

Each endpoint names the parameters it accepts; anything else is an InvalidRequest
(clause 6.3.20), so a typo is reported instead of silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from starlette.datastructures import QueryParams

from urbanos.core import geo
from urbanos.core.entity import check_name, is_uri
from urbanos.core.model import LOCATION
from urbanos.core.query.parse import parse_q, parse_scope_q, parse_type_expr
from urbanos.core.render import RenderOptions
from urbanos.core.selection import EntityQuery, check_id_pattern
from urbanos.errors import BadRequestData, InvalidRequest, TooManyResults
from urbanos.settings import Settings
from urbanos.types import Terms

RENDER_PARAMS = frozenset({"attrs", "pick", "omit", "options", "format", "lang", "geometryProperty"})
QUERY_PARAMS = RENDER_PARAMS | frozenset(
    {"id", "idPattern", "type", "q", "scopeQ", "georel", "geometry", "coordinates",
     "geoproperty", "limit", "offset", "count", "local", "csf", "datasetId", "containedBy",
     "join", "joinLevel", "entityMap", "splitEntities", "expandValues", "collect", "via"}
)
_FORMATS = {"normalized", "concise", "keyValues", "simplified"}
_OPTIONS = {"keyValues", "simplified", "concise", "normalized", "sysAttrs"}


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


def flag(params: QueryParams, name: str) -> bool:
    raw = params.get(name)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise InvalidRequest(f"{name} must be true or false")
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


def render_options(
    params: QueryParams, terms: Terms, *, extra_options: set[str] = frozenset()  # type: ignore[assignment]
) -> RenderOptions:
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
    if "pick" in params and "omit" in params:
        raise BadRequestData("pick and omit cannot be used together")
    member_names = frozenset({"id", "type", "scope"})
    pick = names(params["pick"], terms, core=member_names) if "pick" in params else None
    omit = names(params["omit"], terms, core=member_names) if "omit" in params else None
    attrs = names(params["attrs"], terms) if "attrs" in params else None
    geoprop = LOCATION
    if "geometryProperty" in params:
        geoprop = terms.expand(check_name(params["geometryProperty"]))
    return RenderOptions(
        fmt=fmt, sys_attrs="sysAttrs" in opts, attrs=attrs, pick=pick, omit=omit,
        lang=params.get("lang"), geoproperty=geoprop,
    )


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
    attrs = names(params["attrs"], terms) if "attrs" in params else None
    q = parse_q(params["q"], terms.expand) if params.get("q") else None
    scope_q = parse_scope_q(params["scopeQ"]) if "scopeQ" in params else None
    geoq = geo.parse_geoq(
        params.get("georel"), params.get("geometry"), params.get("coordinates"),
        params.get("geoproperty"), terms.expand,
    )
    local = flag(params, "local")
    if require_filter and not local and all(
        x is None for x in (ids, id_pattern, types, attrs, q, geoq, scope_q)
    ):
        raise BadRequestData(
            "a query needs at least one of id, idPattern, type, attrs, q, geoQ or local=true"
        )
    limit, offset, count = paging(params, settings)
    return EntityQuery(
        ids=ids, id_pattern=id_pattern, types=types, attrs=attrs, q=q, scope_q=scope_q,
        geo=geoq, lang=params.get("lang"), limit=limit, offset=offset, count=count,
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
