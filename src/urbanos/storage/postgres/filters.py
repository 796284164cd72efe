"""EntityQuery parts -> SQL conditions on ``entities e`` (bound parameters only).

Type, attrs and id conditions are exact. q and geo conditions are *supersets*: every
entity the reference semantics (``core.selection.matches``) selects passes them, and the
store evaluates ``matches`` on what is left. So they only need to be right about what
they exclude:

* q: a term on an entity attribute needs the attribute (``e.attrs``, GIN). Comparisons on a
  plain path (no sub-attribute, compound key or link) with numbers, booleans, and strings
  that do not read as date-times (those compare temporally in Python) are also checked in
  JSONB with a fixed jsonpath over every member that can hold a target value (value,
  valueList, json, vocab, object, objectList, languageMap); the literals travel as jsonpath
  variables. ``!=``, patterns, negations and linked paths keep only what they imply.
* geo: core.geo measures ``near`` on a sphere along lon/lat-straight edges and relates
  shapes planar in lon/lat. PostGIS agrees exactly on point-to-point sphere distances
  (``ST_DWithin`` on geography, ``use_spheroid => false``) and on planar relations of valid
  geometries (``ST_Intersects`` on geometry); anything else is narrowed by the bounding box
  ``GeoQuery.candidate_bbox`` computes for those semantics.
"""

from __future__ import annotations

from typing import Any

import orjson
import shapely
from psycopg import sql
from psycopg.types.json import Jsonb
from shapely.geometry import shape

from urbanos.core.geo import GeoQuery
from urbanos.core.query import ast
from urbanos.core.selection import EntitySelector
from urbanos.storage.index_values import value_test

Cond = tuple[sql.Composable, list[Any]]

TRUE: Cond = (sql.SQL("TRUE"), [])
#: where a target value can sit in an attribute instance, as jsonpath steps from ``@``
_MEMBERS = (
    "value[*]",
    "valueList[*]",
    "json[*]",
    "vocab[*]",
    "object[*]",
    "objectList[*].object[*]",
    "languageMap.*[*]",
)
_JSONPATH_OPS = {ast.Op.EQ: "==", ast.Op.GT: ">", ast.Op.GE: ">=", ast.Op.LT: "<", ast.Op.LE: "<="}
#: relative and absolute slack on distances, far above the 5e-9 between the two radii
_REL, _ABS = 1e-6, 0.01


def _join(parts: list[Cond], word: str) -> Cond:
    if len(parts) == 1:
        return parts[0]
    text = sql.SQL(f" {word} ").join(p[0] for p in parts)
    return sql.SQL("({})").format(text), [x for p in parts for x in p[1]]


# --------------------------------------------------------------------------- ids, types


def type_condition(expr: ast.TypeExpr) -> Cond:
    """Exact: ``types`` holds the entity's expanded types (GIN-indexed array)."""
    if isinstance(expr, ast.TypeName):
        return sql.SQL("e.types @> %s::text[]"), [[expr.iri]]
    if isinstance(expr, ast.TypeAny):
        return TRUE
    names = [c.iri for c in expr.children if isinstance(c, ast.TypeName)]
    if isinstance(expr, ast.TypeOr) and len(names) == len(expr.children):
        return sql.SQL("e.types && %s::text[]"), [names]
    assert isinstance(expr, ast.TypeAnd | ast.TypeOr)
    return _join(
        [type_condition(c) for c in expr.children], "AND" if isinstance(expr, ast.TypeAnd) else "OR"
    )


def selectors_condition(selectors: tuple[EntitySelector, ...]) -> tuple[Cond | None, bool]:
    """(condition or None for no narrowing, whether it is exact) for ``entities`` entries."""
    parts: list[Cond] = []
    exact = True
    for s in selectors:
        ands: list[Cond] = []
        if s.ids is not None:
            ands.append((sql.SQL("e.id = ANY(%s::text[])"), [list(s.ids)]))
        elif s.id_pattern is not None:
            exact = False  # Python regex semantics: decided by matches()
        if s.types is not None:
            ands.append(type_condition(s.types))
        if not ands:
            return None, False
        parts.append(_join(ands, "AND"))
    if not parts:
        return (sql.SQL("FALSE"), []), True
    return _join(parts, "OR"), exact


# --------------------------------------------------------------------------- q


def q_condition(expr: ast.QExpr, schema: str) -> Cond | None:
    """A condition every entity selected by ``expr`` meets, or None when nothing narrows."""
    if isinstance(expr, ast.And):
        parts = [c for c in (q_condition(child, schema) for child in expr.children) if c]
        return _join(parts, "AND") if parts else None
    if isinstance(expr, ast.Or):
        alternatives = [q_condition(child, schema) for child in expr.children]
        if any(a is None for a in alternatives):
            return None
        return _join([a for a in alternatives if a is not None], "OR")
    if not isinstance(expr, ast.Exists | ast.Comparison | ast.Pattern) or expr.path.is_entity_member:
        return None  # negations; createdAt/modifiedAt (temporal comparisons)
    has_attr: Cond = (sql.SQL("e.attrs @> %s::text[]"), [[expr.path.attr]])
    if isinstance(expr, ast.Comparison) and _plain(expr.path):
        indexed = _indexed_test(expr, schema)
        if indexed is not None:
            return indexed
        test = _value_test(expr)
        if test is not None:
            jsonpath, variables = test
            values: Cond = (
                sql.SQL("jsonb_path_exists(e.doc->'attrs'->%s, %s::jsonpath, %s::jsonb)"),
                [expr.path.attr, jsonpath, Jsonb(variables)],
            )
            return _join([has_attr, values], "AND")
    return has_attr


def _indexed_test(expr: ast.Comparison, schema: str) -> Cond | None:
    """``e.pk IN`` the ``attr_values`` rows that could satisfy ``expr``
    (``storage.index_values.value_test``), or None."""
    test = value_test(expr)
    if test is None:
        return None
    where: str
    args: list[Any]
    if test.kind == "compare":
        where, args = f"{test.column} {test.op} %s", [*test.values]
    elif test.kind == "between":
        where, args = "num BETWEEN %s AND %s", [*test.values]
    else:
        where = "(num = ANY(%s::float8[]) OR str = ANY(%s::text[]))"
        args = [list(test.nums), list(test.strs)]
    return (
        sql.SQL("e.pk IN (SELECT pk FROM {} WHERE attr = %s AND " + where + ")").format(
            sql.Identifier(schema, "attr_values")
        ),
        [expr.path.attr, *args],
    )


def _plain(path: ast.AttrPath) -> bool:
    return not path.sub and not path.compound and path.linked is None


def _value_test(expr: ast.Comparison) -> tuple[str, dict[str, Any]] | None:
    """(jsonpath, variables) true for an attribute whose instances could satisfy ``expr``."""
    variables: dict[str, Any] = {}

    def var(scalar: ast.Scalar) -> str:
        name = f"v{len(variables)}"
        variables[name] = scalar.value
        return "$" + name

    value, op = expr.value, expr.op
    if isinstance(value, ast.Scalar):
        if not _sql_comparable(value, ordered=op is not ast.Op.EQ) or op is ast.Op.NE:
            return None
        test = f"@ {_JSONPATH_OPS[op]} {var(value)}"
    elif op is not ast.Op.EQ:
        return None
    elif isinstance(value, ast.ValueList):
        if not all(_sql_comparable(item, ordered=False) for item in value.items):
            return None
        test = " || ".join(f"@ == {var(item)}" for item in value.items)
    else:
        assert isinstance(value, ast.Range)
        if value.low.kind is not ast.ValueKind.NUMBER or value.high.kind is not ast.ValueKind.NUMBER:
            return None
        test = f"@ >= {var(value.low)} && @ <= {var(value.high)}"
    members = " || ".join(f"exists(@.{m} ? ({test}))" for m in _MEMBERS)
    return f"$[*] ? ({members})", variables


def _sql_comparable(value: ast.Scalar, *, ordered: bool) -> bool:
    """Whether jsonpath compares this literal as core.query.evaluate does.

    Numbers always; booleans for equality; strings for equality unless they read as
    date-times (then two date-time strings compare as instants, not as text).
    """
    if value.kind is ast.ValueKind.NUMBER:
        return True
    if value.kind is ast.ValueKind.BOOLEAN:
        return not ordered
    if value.kind in (ast.ValueKind.STRING, ast.ValueKind.URI) and isinstance(value.value, str):
        return not ordered and ast.parse_datetime(value.value) is None
    return False


# --------------------------------------------------------------------------- geo


def geo_condition(geo: GeoQuery, schema: str) -> Cond | None:
    """``e.pk IN (rows of geo_values that could satisfy geo)``, or None."""
    test = _geo_test(geo)
    if test is None:
        return None
    where, params = test
    query = sql.SQL("e.pk IN (SELECT g.pk FROM {} g WHERE g.attr = %s AND ({}))").format(
        sql.Identifier(schema, "geo_values"), where
    )
    return query, [geo.geoproperty, *params]


def _geo_test(geo: GeoQuery) -> Cond | None:
    value = geo.geometry_value
    geojson = orjson.dumps(value).decode()
    query_geom = sql.SQL("ST_SetSRID(ST_Force2D(ST_GeomFromGeoJSON(%s::text)), 4326)")
    is_point = value["type"] == "Point"
    box = geo.candidate_bbox()
    envelope: Cond | None = None
    if box is not None:
        envelope = sql.SQL("g.geom && ST_MakeEnvelope(%s, %s, %s, %s, 4326)"), list(box)
    if geo.georel == "near":
        if geo.max_distance is not None:
            assert envelope is not None
            if not is_point:
                return envelope
            reach = geo.max_distance * (1 + _REL) + _ABS
            near = sql.SQL(
                "(g.point IS NOT NULL AND ST_DWithin(g.point, ({})::geography, %s, false))"
            ).format(query_geom)
            far_shape = sql.SQL("(g.point IS NULL AND {})").format(envelope[0])
            return sql.SQL("{} OR {}").format(near, far_shape), [geojson, reach, *envelope[1]]
        assert geo.min_distance is not None
        reach = geo.min_distance * (1 - _REL) - _ABS
        if not is_point or reach <= 0:
            return None
        return (
            sql.SQL(
                "g.point IS NULL OR NOT ST_DWithin(g.point, ({})::geography, %s, false)"
            ).format(query_geom),
            [geojson, reach],
        )
    valid = bool(shapely.is_valid(shape(value)))
    if geo.georel == "disjoint":
        if not valid:
            return None
        return (
            sql.SQL("CASE WHEN g.valid THEN NOT ST_Intersects(g.geom, {}) ELSE TRUE END").format(
                query_geom
            ),
            [geojson],
        )
    # within, contains, intersects, overlaps, equals: each implies intersecting
    assert envelope is not None
    if not valid:
        return envelope
    intersects = sql.SQL("CASE WHEN g.valid THEN ST_Intersects(g.geom, {}) ELSE TRUE END").format(
        query_geom
    )
    return sql.SQL("{} AND {}").format(envelope[0], intersects), [*envelope[1], geojson]
