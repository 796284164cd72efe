"""q -> SQL candidate filters for the SQLite store.

The translation is a *superset* filter: every entity the q expression selects passes it,
and the store then evaluates the exact expression (``core.selection.matches``) on the few
candidates left. So the SQL only has to be right about what it excludes, which keeps it
small: numeric comparisons, string and URI equality, and "the attribute exists" for
everything else it can narrow. Values come from ``attr_values``, one row per scalar that an
attribute instance holds (``storage.index_values``).

Each filter has two forms: ``select`` lists the pks it admits (to drive a query from an
index) and ``check`` tests one entity ``e`` (a correlated ``EXISTS`` seek), so a query is
driven by its most selective filter and the others cost one index seek per candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from urbanos.core.query.ast import (
    And,
    AttrPath,
    Comparison,
    Exists,
    Or,
    Pattern,
    QExpr,
)
from urbanos.storage.index_values import value_test
from urbanos.storage.sqlite.names import ID, ids_in

#: one row per (scalar, entity type): a comparison under a type selection reads only the
#: rows of those types, and an entity without types has one row with a NULL type; attribute
#: and type are interned names (``names``)
VALUES_TABLE = """CREATE TABLE IF NOT EXISTS attr_values (
    tenant TEXT NOT NULL, attr INTEGER NOT NULL, type INTEGER, num REAL, str TEXT,
    pk INTEGER NOT NULL)"""
SCHEMA = [
    *(f"DROP INDEX IF EXISTS {old}" for old in (  # earlier shapes of the indexes
        "attr_values_num", "attr_values_str", "attr_values_pk", "attr_values_num_pk",
        "attr_values_str_pk", "attr_values_by_pk")),
]
#: covering (type and pk after the value) so that selecting candidates, with or without a
#: type selection, never reads the table; partial, so that a row enters only the index of
#: the kind of value it holds (a comparison on ``num`` or ``str`` implies it is not NULL);
#: (pk, attr) serves per-entity checks and deletes. Created by ``entities.upgrade`` once the
#: table has its current columns.
VALUE_INDEXES = [
    """CREATE INDEX IF NOT EXISTS attr_values_num_type ON attr_values (tenant, attr, num, type, pk)
       WHERE num IS NOT NULL""",
    """CREATE INDEX IF NOT EXISTS attr_values_str_type ON attr_values (tenant, attr, str, type, pk)
       WHERE str IS NOT NULL""",
    "CREATE INDEX IF NOT EXISTS attr_values_pk_attr ON attr_values (pk, attr)",
]



@dataclass(frozen=True, slots=True)
class Filter:
    """A condition on entities: ``select`` yields admitted pks, ``check`` tests ``e.pk``."""

    select: str
    params: list[Any]
    check: str
    check_params: list[Any]

    @staticmethod
    def of(table: str, where: str, params: list[Any], index: str | None = None) -> Filter:
        """A filter over one index table with a ``pk`` column."""
        hint = f" INDEXED BY {index}" if index else ""
        return Filter(
            f"SELECT pk FROM {table} WHERE {where}", params,
            f"EXISTS (SELECT 1 FROM {table}{hint} WHERE pk = e.pk AND {where})", params,
        )

    @staticmethod
    def all_of(filters: list[Filter]) -> Filter:
        if len(filters) == 1:
            return filters[0]
        return Filter(
            "SELECT pk FROM (" + " INTERSECT ".join(f.select for f in filters) + ")",
            [x for f in filters for x in f.params],
            "(" + " AND ".join(f.check for f in filters) + ")",
            [x for f in filters for x in f.check_params],
        )

    @staticmethod
    def any_of(filters: list[Filter]) -> Filter:
        return Filter(
            " UNION ".join(f.select for f in filters),
            [x for f in filters for x in f.params],
            "(" + " OR ".join(f.check for f in filters) + ")",
            [x for f in filters for x in f.check_params],
        )


def q_filter(
    expr: QExpr, tenant: str, types: frozenset[str] | None = None
) -> list[Filter]:
    """Conditions that every match of ``expr`` satisfies; ``types``, when the query selects
    entities of these types only, narrows the value comparisons to their rows."""
    if isinstance(expr, And):
        return [f for c in expr.children for f in q_filter(c, tenant, types)]
    if isinstance(expr, Or):
        branches = [q_filter(c, tenant, types) for c in expr.children]
        if any(not b for b in branches):
            return []
        return [Filter.any_of([Filter.all_of(b) for b in branches])]
    if isinstance(expr, Comparison) and _plain(expr.path):
        exact = _comparison(expr, tenant, types)
        if exact is not None:
            return [exact]
    if isinstance(expr, Exists | Comparison | Pattern) and _attribute(expr.path):
        return [Filter.of("entity_attrs", f"tenant = ? AND attr = {ID}", [tenant, expr.path.attr])]
    return []


def _attribute(path: AttrPath) -> bool:
    return not path.is_entity_member


def _plain(path: AttrPath) -> bool:
    return _attribute(path) and not path.sub and not path.compound and path.linked is None


def _values(
    where: str, params: list[Any], tenant: str, attr: str, types: frozenset[str] | None
) -> Filter:
    if types is not None:
        where += f" AND type IN {ids_in(len(types))}"
        params = [*params, *sorted(types)]
    return Filter.of(
        "attr_values", f"tenant = ? AND attr = {ID} AND {where}", [tenant, attr, *params],
        index="attr_values_pk_attr",
    )


def _comparison(
    expr: Comparison, tenant: str, types: frozenset[str] | None
) -> Filter | None:
    test = value_test(expr)
    if test is None:
        return None
    attr = expr.path.attr
    if test.kind == "compare":
        return _values(f"{test.column} {test.op} ?", [*test.values], tenant, attr, types)
    if test.kind == "between":
        return _values("num BETWEEN ? AND ?", [*test.values], tenant, attr, types)
    ors = []
    if test.nums:
        ors.append(f"num IN ({','.join('?' * len(test.nums))})")
    if test.strs:
        ors.append(f"str IN ({','.join('?' * len(test.strs))})")
    return _values("(" + " OR ".join(ors) + ")", [*test.nums, *test.strs], tenant, attr, types)
