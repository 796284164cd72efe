"""Which entities a query selects (clause 4.17 and 5.7.2), as one pure predicate.

Stores narrow candidates with their indexes (ids, types, R*Tree) and then call
``matches`` for what their indexes cannot decide exactly, so the meaning of a query lives
here once, not in each store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from urbanos.core.expiry import due, live
from urbanos.core.ordering import sort_entities
from urbanos.core.query.ast import And, Not, Or
from urbanos.core.query.evaluate import (
    EntityResolver,
    matches_q,
    matches_scope,
    matches_type,
    regex_problem,
)
from urbanos.core.render import relationship_targets
from urbanos.errors import BadRequestData
from urbanos.types import JSONObject

if TYPE_CHECKING:
    from urbanos.core.geo import GeoQuery
    from urbanos.core.ordering import Ordering
    from urbanos.core.policy import View
    from urbanos.core.query.ast import QExpr, ScopeExpr, TypeExpr


@dataclass(frozen=True, slots=True)
class EntitySelector:
    """One entry of a Query's ``entities`` (clause 5.2.33): id, idPattern and type together.

    ``ids`` takes precedence over ``id_pattern``: with both, the pattern is not applied.
    """

    ids: tuple[str, ...] | None = None
    id_pattern: str | None = None
    types: TypeExpr | None = None

    def matches(self, entity: JSONObject) -> bool:
        return _identified(entity, self.ids, self.id_pattern, self.types)


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
    order: Ordering | None = None
    limit: int = 20
    offset: int = 0
    count: bool = False
    #: canonical now (``core.expiry``): expired entities are left out, and expired
    #: instances do not count; None for a query that sees every stored document
    alive_at: str | None = None
    #: what the caller may see (``core.policy.View``): entities it may not see are left
    #: out and hidden attributes removed before matching, counting and paging; None for a
    #: caller who sees everything (the stores' exact SQL paths need it None)
    view: View | None = None


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
    return _type_names(expr, exact=True)


def required_types(expr: TypeExpr) -> frozenset[str] | None:
    """Type names one of which every entity the expression selects has; None if none."""
    return _type_names(expr, exact=False)


def _type_names(expr: TypeExpr, *, exact: bool) -> frozenset[str] | None:
    """Names joined by OR; with ``exact`` off, an AND is represented by one of its parts."""
    from urbanos.core.query import ast

    if isinstance(expr, ast.TypeName):
        return frozenset({expr.iri})
    if isinstance(expr, ast.TypeOr):
        out: set[str] = set()
        for child in expr.children:
            sub = _type_names(child, exact=exact)
            if sub is None:
                return None
            out |= sub
        return frozenset(out)
    if isinstance(expr, ast.TypeAnd) and not exact:
        for child in expr.children:
            sub = _type_names(child, exact=exact)
            if sub is not None:
                return sub
    return None


def linked_steps(expr: QExpr) -> list[frozenset[str]]:
    """The Relationship names a query follows at each hop (``[{a}, {b}]`` for ``a{b{c}}``).

    Stores use it to fetch the linked entities of a batch of candidates level by level
    before evaluating ``q``, instead of one lookup per relationship.
    """
    if isinstance(expr, And | Or):
        levels: list[set[str]] = []
        for child in expr.children:
            for i, names in enumerate(linked_steps(child)):
                if i == len(levels):
                    levels.append(set())
                levels[i] |= names
        return [frozenset(level) for level in levels]
    if isinstance(expr, Not):
        return linked_steps(expr.child)
    out: list[frozenset[str]] = []
    path = expr.path
    while path.linked is not None:
        out.append(frozenset({path.attr}))
        path = path.linked.path
    return out


def _identified(entity: JSONObject, ids: tuple[str, ...] | None, id_pattern: str | None,
                types: TypeExpr | None) -> bool:
    """Whether the entity has one of ``ids`` (else matches ``id_pattern``) and ``types``."""
    if ids is not None:
        if entity["id"] not in ids:
            return False
    elif id_pattern is not None and not compile_id_pattern(id_pattern).search(entity["id"]):
        return False
    return types is None or matches_type(types, entity.get("type", []))


def matches(
    entity: JSONObject, query: EntityQuery, linked: EntityResolver | None = None
) -> bool:
    """Whether a stored entity is selected; ``linked`` resolves ``attr{...}`` q terms.
    With a ``view``, pass the entity as ``shown`` returns it."""
    if query.alive_at is not None:
        shown = live(entity, query.alive_at)
        if shown is None:
            return False
        entity = shown
    if not _identified(entity, query.ids, query.id_pattern, query.types):
        return False
    if query.selectors is not None and not any(s.matches(entity) for s in query.selectors):
        return False
    if query.attrs is not None and not any(a in entity["attrs"] for a in query.attrs):
        return False
    if query.scope_q is not None and not matches_scope(query.scope_q, entity.get("scope")):
        return False
    if query.q is not None and not matches_q(query.q, entity, lang=query.lang, linked=linked):
        return False
    if query.geo is not None:
        instances = entity["attrs"].get(query.geo.geoproperty)
        if not instances or not any(
            i.get("type") == "GeoProperty" and query.geo.matches(i.get("value"))
            for i in instances
        ):
            return False
    return True


def select_page(
    entities: Iterable[JSONObject], query: EntityQuery, linked: EntityResolver | None = None
) -> tuple[list[JSONObject], int | None]:
    """A query over documents held in memory (no index): the page and, when asked, the
    number of matches. The memory store and snapshots (clause 5.16) answer with it."""
    linked = seen_through(linked, query)
    selected = [e for e in shown(entities, query) if matches(e, query, linked)]
    if query.order is not None:
        selected = sort_entities(selected, query.order, query.lang)
    page = selected[query.offset : query.offset + query.limit]
    return page, (len(selected) if query.count else None)


def shown(entities: Iterable[JSONObject], query: EntityQuery) -> Iterable[JSONObject]:
    """The entities as the query's caller may see them (``EntityQuery.view``)."""
    if query.view is None:
        return entities
    show = query.view.show
    return (e for e in (show(x) for x in entities) if e is not None)


def seen_through(linked: EntityResolver | None, query: EntityQuery
                 ) -> EntityResolver | None:
    """``linked`` as the query's caller may see the entities it reaches: a q that follows a
    Relationship cannot test what the caller may not see there either."""
    if linked is None or query.view is None:
        return linked
    show = query.view.show
    resolve = linked

    def seen(entity_id: str) -> JSONObject | None:
        found = resolve(entity_id)
        return None if found is None else show(dict(found))

    return seen


def hop_targets(frontier: list[JSONObject], names: frozenset[str]) -> set[str]:
    """The entity ids the ``names`` relationships of ``frontier`` point to: one hop of a
    linked q (clause 4.9), which a store then fetches in one query."""
    return {
        target
        for entity in frontier
        for name in names
        for inst in entity["attrs"].get(name, ())
        for target in relationship_targets(inst)
    }


class Pager:
    """One page of a query from candidates fed in pk order, in batches.

    Both SQL stores narrow candidates with indexes and feed them here; this decides what is
    selected (``matches``, unless the store's SQL was exact), the offset and limit, the
    count and the ordering, and when no more candidates are needed.
    """

    def __init__(self, query: EntityQuery, *, exact: bool = False) -> None:
        self.query = query
        self.exact = exact and query.view is None
        self.selected: list[JSONObject] = []
        self.seen = 0
        self._fed = False

    def batch_size(self, most: int) -> int:
        """Candidates to fetch next: one page first (the SQL stops early when most
        candidates match), then ``most``."""
        q = self.query
        if self._fed or q.order is not None or q.count:
            return most
        return min(max(q.offset + q.limit, 1), most)

    def feed(self, batch: list[JSONObject], linked: EntityResolver | None = None) -> bool:
        """Take a batch of candidates; True once the page is complete."""
        self._fed = True
        q = self.query
        linked = seen_through(linked, q)
        for entity in shown(batch, q):
            if (not self.exact or due(entity, q.alive_at)) and not matches(entity, q, linked):
                continue  # an exact SQL filter still counted what has expired since
            if q.order is not None:
                self.selected.append(entity)
                continue
            if q.offset <= self.seen < q.offset + q.limit:
                self.selected.append(entity)
            self.seen += 1
            if not q.count and self.seen >= q.offset + q.limit:
                return True
        return False

    def result(self) -> tuple[list[JSONObject], int | None]:
        """The page and, when the query asked for it, the number of matches."""
        q = self.query
        if q.order is None:
            return self.selected, (self.seen if q.count else None)
        ordered = sort_entities(self.selected, q.order, q.lang)
        return ordered[q.offset : q.offset + q.limit], (len(ordered) if q.count else None)
