"""Which entities a query selects (clause 4.17 and 5.7.2), as one pure predicate.

Stores narrow candidates with their indexes (ids, types, R*Tree) and then call
``matches`` for what their indexes cannot decide exactly, so the meaning of a query lives
here once, not in each store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from urbanos.core.query.evaluate import matches_q, matches_scope, matches_type, regex_problem
from urbanos.errors import BadRequestData
from urbanos.types import JSONObject

if TYPE_CHECKING:
    from urbanos.core.geo import GeoQuery
    from urbanos.core.query.ast import QExpr, ScopeExpr, TypeExpr


@dataclass(frozen=True, slots=True)
class EntitySelector:
    """One entry of a Query's ``entities`` (clause 5.2.33): id, idPattern and type together."""

    id: str | None = None
    id_pattern: str | None = None
    types: TypeExpr | None = None

    def matches(self, entity: JSONObject) -> bool:
        if self.id is not None and entity["id"] != self.id:
            return False
        if self.id_pattern is not None and not compile_id_pattern(self.id_pattern).search(
            entity["id"]
        ):
            return False
        return self.types is None or matches_type(self.types, entity.get("type", []))


@dataclass(frozen=True, slots=True)
class EntityQuery:
    ids: tuple[str, ...] | None = None
    id_pattern: str | None = None
    types: TypeExpr | None = None
    attrs: frozenset[str] | None = None  # the entity must have at least one of them
    q: QExpr | None = None
    scope_q: ScopeExpr | None = None
    geo: GeoQuery | None = None
    lang: str | None = None
    selectors: tuple[EntitySelector, ...] | None = None  # any of them must match
    limit: int = 20
    offset: int = 0
    count: bool = False


@lru_cache(maxsize=256)
def compile_id_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def check_id_pattern(pattern: str) -> None:
    """Refuse idPatterns that do not compile or that could take super-linear time."""
    if len(pattern) > 1024:
        raise BadRequestData("idPattern is too long")
    problem = regex_problem(pattern)
    if problem:
        raise BadRequestData(f"idPattern {pattern!r}: {problem}")


def simple_type_set(expr: TypeExpr) -> frozenset[str] | None:
    """The type names of an expression that is only names joined by OR, else None."""
    from urbanos.core.query import ast

    if isinstance(expr, ast.TypeName):
        return frozenset({expr.iri})
    if isinstance(expr, ast.TypeOr):
        out: set[str] = set()
        for child in expr.children:
            sub = simple_type_set(child)
            if sub is None:
                return None
            out |= sub
        return frozenset(out)
    return None


def matches(entity: JSONObject, query: EntityQuery) -> bool:
    if query.ids is not None and entity["id"] not in query.ids:
        return False
    if query.id_pattern is not None and not compile_id_pattern(query.id_pattern).search(
        entity["id"]
    ):
        return False
    if query.types is not None and not matches_type(query.types, entity.get("type", [])):
        return False
    if query.selectors is not None and not any(s.matches(entity) for s in query.selectors):
        return False
    if query.attrs is not None and not any(a in entity["attrs"] for a in query.attrs):
        return False
    if query.scope_q is not None and not matches_scope(query.scope_q, entity.get("scope")):
        return False
    if query.q is not None and not matches_q(query.q, entity, lang=query.lang):
        return False
    if query.geo is not None:
        instances = entity["attrs"].get(query.geo.geoproperty)
        if not instances or not any(
            i.get("type") == "GeoProperty" and query.geo.matches(i.get("value"))
            for i in instances
        ):
            return False
    return True
