"""Evaluate ``q``, ``type`` and ``scopeQ`` trees against stored entities, in Python.

Used for subscription matching and by the memory store, so it never parses or compiles
per call: trees come parsed, regular expressions are compiled once (``compiled_pattern``)
and target strings are converted to dates through small caches.

Semantics (ETSI GS CIM 009 clause 4.9), decided once here:

* A path resolves to *units*: one per attribute instance (every datasetId instance, every
  followed sub-attribute, every linked entity). A term holds if it holds for **any** unit.
* The target value of a unit is, by attribute kind: Property/GeoProperty ``value``,
  Relationship ``object``, ListProperty ``valueList``, ListRelationship ``objectList``,
  VocabProperty ``vocab`` (an expanded IRI; query values are only expanded when the
  request names the attribute in ``expandValues``, EXAMPLE 12), LanguageProperty
  ``languageMap`` values (``[tag]`` or the ``lang`` argument picks one language, ``[*]``
  any) and JsonProperty ``json``. A sub-path ending in a core member (``.observedAt``,
  ``.unitCode``, ``.datasetId``...) targets that member. ``[a.b]`` keys walk into the value
  (over list elements too); an undefined key makes the target non-existent.
* An array target is a set of candidates: ``==``, ordering and ``~=`` hold if any element
  satisfies them; ``!=`` holds if the target exists and **no** element equals any query
  value (so ``tags!="a"`` fails for ``["a","b"]``); a missing target never matches ``!=``.
* Values compare only within one type: numbers with numbers (booleans are not numbers),
  booleans with booleans, strings with strings (code-point order), dateTime/date/time
  literals with target strings of that form, temporally. Two strings that both read as
  dateTimes compare temporally, so ``modifiedAt>"2024-01-01T00:00:00Z"`` works. A type
  mismatch is not equal (so ``!=`` matches) and not ordered.
* Relationships and ListRelationships only take ``==`` and ``!=``; any other operator,
  patterns included, does not match them.
* ``~=`` uses ``re.search``: the spec points at IEEE 1003.2 regular expressions, whose
  regexec finds a match anywhere, and suite queries such as ``name!~="^Eiffel"`` rely on
  it; anchor with ``^``/``$`` for a whole-string match. ``!~=`` needs a string target none
  of whose strings match. Non-string targets never match either.
* Scopes (4.19): a term matches if any of the entity's scopes matches it; ``;`` needs every
  term, each possibly through a different scope.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Any

from urbanos.core.model import CORE_MEMBERS, ENTITY_MEMBERS, NULL_URN, VALUE_MEMBER
from urbanos.core.query import ast

__all__ = [
    "EntityResolver",
    "attribute_names",
    "compiled_pattern",
    "linked_depth",
    "matches_q",
    "matches_scope",
    "matches_type",
    "regex_problem",
]

#: fetches a stored entity by id for linked-entity terms (``attr{path}``); None if unknown
EntityResolver = Callable[[str], Mapping[str, Any] | None]

Unit = tuple[bool, list[Any]]  # (is a relationship, candidate target values)

_dt = lru_cache(maxsize=4096)(ast.parse_datetime)
_date = lru_cache(maxsize=1024)(ast.parse_date)
_time = lru_cache(maxsize=1024)(ast.parse_time)


# --------------------------------------------------------------------------- q


def matches_q(
    expr: ast.QExpr,
    entity: Mapping[str, Any],
    *,
    lang: str | None = None,
    linked: EntityResolver | None = None,
) -> bool:
    """Whether a stored entity satisfies a parsed query.

    ``lang`` selects the language of LanguageProperty targets that carry no ``[tag]``.
    ``linked`` resolves relationship objects for ``attr{...}`` terms; without it those
    terms never match (the caller decides whether linked queries are allowed at all).
    """
    return _eval(expr, entity, lang, linked)


def _eval(
    expr: ast.QExpr, entity: Mapping[str, Any], lang: str | None, linked: EntityResolver | None
) -> bool:
    if isinstance(expr, ast.Comparison):
        return _compare(expr, entity, lang, linked)
    if isinstance(expr, ast.And):
        return all(_eval(child, entity, lang, linked) for child in expr.children)
    if isinstance(expr, ast.Or):
        return any(_eval(child, entity, lang, linked) for child in expr.children)
    if isinstance(expr, ast.Exists):
        return any(True for _ in _units(expr.path, entity, lang, linked))
    if isinstance(expr, ast.Pattern):
        return _pattern(expr, entity, lang, linked)
    return not _eval(expr.child, entity, lang, linked)


def _compare(
    expr: ast.Comparison, entity: Mapping[str, Any], lang: str | None, linked: EntityResolver | None
) -> bool:
    op, value = expr.op, expr.value
    for is_relationship, targets in _units(expr.path, entity, lang, linked):
        if op is ast.Op.EQ:
            if _any_equal(value, targets):
                return True
        elif op is ast.Op.NE:
            if not _any_equal(value, targets):
                return True
        elif not is_relationship:
            assert isinstance(value, ast.Scalar)
            if any(_ordered(op, value, t) for t in targets):
                return True
    return False


def _pattern(
    expr: ast.Pattern, entity: Mapping[str, Any], lang: str | None, linked: EntityResolver | None
) -> bool:
    search = compiled_pattern(expr.regex).search
    for is_relationship, targets in _units(expr.path, entity, lang, linked):
        strings = [t for t in targets if isinstance(t, str)]
        if is_relationship or not strings:
            continue
        if any(search(s) for s in strings) is not expr.negated:
            return True
    return False


# ---- resolving a path to units


def _units(
    path: ast.AttrPath, entity: Mapping[str, Any], lang: str | None, linked: EntityResolver | None
) -> Iterator[Unit]:
    if path.linked is not None:
        if linked is None:
            return
        hints = path.linked.types
        for target_id in _relationship_ids(entity, path.attr):
            target = linked(target_id)
            if target is None:
                continue
            if hints and not any(t in hints for t in target.get("type", ())):
                continue
            yield from _units(path.linked.path, target, lang, linked)
        return
    if path.attr in ENTITY_MEMBERS:
        member = entity.get(path.attr)
        if member is not None and not path.sub and not path.compound:
            yield False, [member]
        return
    attrs = entity.get("attrs")
    instances = attrs.get(path.attr) if isinstance(attrs, Mapping) else None
    if not instances:
        return
    for instance in [instances] if isinstance(instances, dict) else instances:
        if not isinstance(instance, dict):
            continue
        if path.sub:
            yield from _from_instance(instance, path.sub, path.compound, lang)
        elif (unit := _seed(instance, path.compound, lang)) is not None:  # the common case
            yield unit


def _from_instance(
    instance: dict[str, Any], sub: tuple[str, ...], compound: tuple[str, ...], lang: str | None
) -> Iterator[Unit]:
    nodes = [instance]
    for i, name in enumerate(sub):
        if name in CORE_MEMBERS:
            if i != len(sub) - 1:
                return
            for node in nodes:
                if name in node:
                    found = _walk([node[name]], compound)
                    if found is not None:
                        yield False, _flatten(found)
            return
        children: list[dict[str, Any]] = []
        for node in nodes:
            child = node.get(name)
            if isinstance(child, dict):
                children.append(child)
            elif isinstance(child, list):
                children.extend(c for c in child if isinstance(c, dict))
        if not children:
            return
        nodes = children
    for node in nodes:
        unit = _seed(node, compound, lang)
        if unit is not None:
            yield unit


def _seed(node: dict[str, Any], compound: tuple[str, ...], lang: str | None) -> Unit | None:
    kind = node.get("type")
    if kind == "Relationship" or kind == "ListRelationship":
        member = node.get("object" if kind == "Relationship" else "objectList")
        if member is None or compound:
            return None
        return True, _object_ids(member)
    if kind == "LanguageProperty":
        lmap = node.get("languageMap")
        if not isinstance(lmap, dict):
            return None
        if compound:
            tag, compound = compound[0], compound[1:]
        else:
            tag = lang or "*"
        if tag == "*":
            values = list(lmap.values())
        elif tag in lmap:
            values = [lmap[tag]]
        else:
            return None
        found = _walk(values, compound)
    else:
        member = VALUE_MEMBER.get(kind, "value") if isinstance(kind, str) else "value"
        if member not in node:
            return None
        found = _walk([node[member]], compound)
    return None if found is None else (False, _flatten(found))


def _walk(values: list[Any], keys: tuple[str, ...]) -> list[Any] | None:
    """Follow compound keys like an ECMAScript member expression, mapping over arrays."""
    for key in keys:
        found: list[Any] = []
        for value in values:
            if isinstance(value, dict):
                if key in value:
                    found.append(value[key])
            elif isinstance(value, list):
                found.extend(e[key] for e in value if isinstance(e, dict) and key in e)
        if not found:
            return None
        values = found
    return values


def _flatten(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if isinstance(value, list):
            out.extend(value)
        else:
            out.append(value)
    return out


def _object_ids(member: Any) -> list[Any]:
    items = member if isinstance(member, list) else [member]
    return [i.get("object") if isinstance(i, dict) else i for i in items]


def _relationship_ids(entity: Mapping[str, Any], attr: str) -> list[str]:
    attrs = entity.get("attrs")
    instances = attrs.get(attr) if isinstance(attrs, Mapping) else None
    ids: list[str] = []
    for instance in instances or ():
        if isinstance(instance, dict) and instance.get("type") in (
            "Relationship",
            "ListRelationship",
        ):
            member = instance.get("object", instance.get("objectList"))
            ids.extend(i for i in _object_ids(member) if isinstance(i, str))
    return ids


# ---- comparing values


def _pair(q: ast.Scalar, target: Any) -> tuple[Any, Any] | None:
    """(query value, target value) in one comparable domain, or None on a type mismatch."""
    kind = q.kind
    if kind is ast.ValueKind.NUMBER:
        if isinstance(target, (int, float)) and not isinstance(target, bool):
            return q.value, target
        return None
    if kind is ast.ValueKind.STRING or kind is ast.ValueKind.URI:
        if not isinstance(target, str):
            return None
        assert isinstance(q.value, str)
        q_dt = _dt(q.value)
        if q_dt is not None and (t_dt := _dt(target)) is not None:
            return q_dt, t_dt
        return q.value, target
    if kind is ast.ValueKind.BOOLEAN:
        return (q.value, target) if isinstance(target, bool) else None
    if not isinstance(target, str):
        return None
    if kind is ast.ValueKind.DATETIME:
        converted: Any = _dt(target)
    elif kind is ast.ValueKind.DATE:
        converted = _date(target)
    else:
        converted = _time(target)
    return None if converted is None else (q.value, converted)


def _equal(q: ast.Scalar, target: Any) -> bool:
    pair = _pair(q, target)
    return pair is not None and pair[0] == pair[1]


def _in_range(r: ast.Range, target: Any) -> bool:
    low, high = _pair(r.low, target), _pair(r.high, target)
    return low is not None and high is not None and low[0] <= low[1] and high[1] <= high[0]


def _any_equal(value: ast.QValue, targets: list[Any]) -> bool:
    if isinstance(value, ast.Scalar):
        return any(_equal(value, t) for t in targets)
    if isinstance(value, ast.ValueList):
        return any(_equal(item, t) for item in value.items for t in targets)
    return any(_in_range(value, t) for t in targets)


def _ordered(op: ast.Op, q: ast.Scalar, target: Any) -> bool:
    pair = _pair(q, target)
    if pair is None:
        return False
    query, value = pair
    if op is ast.Op.GT:
        return bool(value > query)
    if op is ast.Op.GE:
        return bool(value >= query)
    if op is ast.Op.LT:
        return bool(value < query)
    return bool(value <= query)


# ---- about a tree


@lru_cache(maxsize=1024)
def attribute_names(expr: ast.QExpr) -> frozenset[str]:
    """The attribute IRIs a query reads on the entity itself (negated ones included).

    Entity-level system members (createdAt, ...) and attributes read on linked entities are
    left out: this is the set whose changes can change the query's answer for the entity.
    """
    if isinstance(expr, ast.And | ast.Or):
        return frozenset().union(*(attribute_names(c) for c in expr.children))
    if isinstance(expr, ast.Not):
        return attribute_names(expr.child)
    path = expr.path
    return frozenset() if path.is_entity_member else frozenset({path.attr})


def linked_depth(expr: ast.QExpr) -> int:
    """How many relationships deep the query looks (0 without ``attr{...}`` terms)."""
    if isinstance(expr, ast.And | ast.Or):
        return max(linked_depth(c) for c in expr.children)
    if isinstance(expr, ast.Not):
        return linked_depth(expr.child)
    depth, path = 0, expr.path
    while path.linked is not None:
        depth, path = depth + 1, path.linked.path
    return depth


# --------------------------------------------------------------------------- type, scope


def matches_type(expr: ast.TypeExpr, types: list[str]) -> bool:
    """Whether an entity with these (expanded) types is selected (clause 4.17)."""
    if isinstance(expr, ast.TypeName):
        return expr.iri in types
    if isinstance(expr, ast.TypeOr):
        return any(matches_type(c, types) for c in expr.children)
    if isinstance(expr, ast.TypeAnd):
        return all(matches_type(c, types) for c in expr.children)
    assert isinstance(expr, ast.TypeAny)
    return True


def matches_scope(expr: ast.ScopeExpr, scopes: list[str] | None) -> bool:
    """Whether an entity with these scopes is selected (clause 4.19); no scope, no match."""
    if not scopes:
        return False
    return _scope(expr, [_scope_levels(s) for s in scopes if s != NULL_URN])


@lru_cache(maxsize=4096)
def _scope_levels(scope: str) -> tuple[str, ...]:
    return tuple(scope.lstrip("/").split("/"))


def _scope(expr: ast.ScopeExpr, scopes: list[tuple[str, ...]]) -> bool:
    if isinstance(expr, ast.ScopeTerm):
        levels, n = expr.levels, len(expr.levels)
        for scope in scopes:
            if len(scope) < n or (len(scope) > n and not expr.descendants):
                continue
            if all(want == "+" or want == got for want, got in zip(levels, scope, strict=False)):
                return True
        return False
    if isinstance(expr, ast.ScopeOr):
        return any(_scope(c, scopes) for c in expr.children)
    assert isinstance(expr, ast.ScopeAnd)
    return all(_scope(c, scopes) for c in expr.children)


# --------------------------------------------------------------------------- regex


@lru_cache(maxsize=1024)
def compiled_pattern(regex: str) -> re.Pattern[str]:
    """The compiled form of a (parse-time validated) pattern, compiled once."""
    return re.compile(regex)


_QUANTIFIER_RE = re.compile(r"\{(\d*)(,?)(\d*)\}")
_UNSET = "\0unset"


class _Group:
    """What the safety check remembers about one open group."""

    __slots__ = ("firsts", "first", "quantified")

    def __init__(self) -> None:
        self.quantified = False  # holds a quantifier somewhere inside
        self.firsts: list[str | None] = []  # first literal of each finished alternative
        self.first: str | None = _UNSET  # first literal of the current alternative

    def end_alternative(self) -> None:
        self.firsts.append(None if self.first == _UNSET else self.first)
        self.first = _UNSET


def regex_problem(pattern: str) -> str | None:
    """Why a pattern is refused, or None: invalid, or at risk of catastrophic backtracking.

    Conservative on purpose: refuses backreferences, a repeated group that itself holds a
    quantifier (``(a+)+``, ``(a*)*``), and a repeated alternation whose branches can start
    with the same character or with a non-literal (``(a|a)*``, ``(a|ab)+``, ``(\\w|x)*``).
    """
    try:
        problem = _scan(pattern)
    except (IndexError, ValueError):  # malformed: let the compiler say how
        problem = None
    if problem is not None:
        return problem
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        return f"invalid ({exc})"
    return None


def _scan(pattern: str) -> str | None:
    stack = [_Group()]
    last: _Group | bool = False  # what a quantifier would repeat: group, atom (True), nothing
    last_was_first = False
    i, n = 0, len(pattern)

    def atom(literal: str | None) -> None:
        nonlocal last, last_was_first
        top = stack[-1]
        last_was_first = top.first == _UNSET
        if last_was_first:
            top.first = literal
        last = True

    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if nxt.isdigit() and nxt != "0":
                return "backreferences are not allowed"
            atom(None if nxt.isalnum() else nxt)
            i += 2
        elif c == "[":
            if pattern.startswith("[", i + 1):
                return "a set may not start with '[' (escape it)"
            j = i + 1 + pattern.startswith("^", i + 1)
            j += pattern.startswith("]", j)
            while j < n and pattern[j] != "]":
                if pattern.startswith(("--", "&&", "~~", "||"), j):
                    return f"ambiguous '{pattern[j : j + 2]}' in a set (escape it)"
                j += 2 if pattern[j] == "\\" else 1
            atom(None)
            i = j + 1
        elif c == "(":
            if pattern.startswith(("(?P=", "(?("), i):
                return "backreferences and conditionals are not allowed"
            if pattern.startswith("(?P<", i):
                i = pattern.index(">", i) + 1
            elif pattern.startswith(("(?<=", "(?<!"), i):
                i += 4
            elif pattern.startswith(("(?:", "(?=", "(?!", "(?>"), i):
                i += 3
            elif pattern.startswith("(?", i):  # inline flags: (?i) or (?i:...)
                j = i + 2
                while pattern[j] not in ":)":
                    j += 1
                if pattern[j] == ")":
                    i, last = j + 1, False
                    continue
                i = j + 1
            else:
                i += 1
            stack.append(_Group())
            last = False
        elif c == ")":
            group = stack.pop()
            group.end_alternative()
            stack[-1].quantified |= group.quantified
            atom(None)
            last = group
            i += 1
        elif c == "|":
            stack[-1].end_alternative()
            last = False
            i += 1
        elif c in "*+?{":
            m = _QUANTIFIER_RE.match(pattern, i) if c == "{" else None
            if c == "{" and (m is None or not (m.group(1) or m.group(3))):
                atom("{")
                i += 1
                continue
            if m is not None:
                low = int(m.group(1) or 0)
                high = None if m.group(2) and not m.group(3) else int(m.group(3) or low)
                i = m.end()
            else:
                low, high = (0 if c in "*?" else 1), (1 if c == "?" else None)
                i += 1
            if i < n and pattern[i] in "?+":  # lazy or possessive modifier
                i += 1
            top = stack[-1]
            top.quantified = True
            if isinstance(last, _Group) and (high is None or high > 1):
                if last.quantified:
                    return "nested quantifiers such as (a+)+ can take exponential time"
                firsts = last.firsts
                if len(firsts) > 1 and (None in firsts or len(set(firsts)) < len(firsts)):
                    return "a repeated alternation whose branches overlap, such as (a|a)*"
            if low == 0 and last_was_first:
                top.first = None
            last = False
        elif c in "^$":
            last = False
            i += 1
        else:
            atom(None if c == "." else c.lower())
            i += 1
    return None
