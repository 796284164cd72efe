"""Syntax trees for the NGSI-LD filter languages.

Three small languages share these nodes: the query language ``q`` (ETSI GS CIM 009
clause 4.9), the entity type selection ``type`` (4.17) and the scope query ``scopeQ``
(4.19). Trees are frozen, slotted and hashable, so a parsed subscription can be kept for
its lifetime, used as a cache key, and handed to any backend (Python evaluation in
``evaluate.py``, SQL translators in ``storage/``) without re-parsing.

Every name in a tree is already expanded: attribute names and entity types are IRIs, core
members (``observedAt``, ``unitCode``, ``datasetId``, ...) are their short stored names
(see ``urbanos.core.model``), and compound keys inside a value are kept verbatim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from urbanos.core.model import ENTITY_MEMBERS

# --------------------------------------------------------------------------- q: values


class ValueKind(StrEnum):
    """What a literal in a query term is; comparisons only hold between equal kinds."""

    NUMBER = "number"
    STRING = "string"  # a "quoted string", or an unquoted bare term (lenient extension)
    BOOLEAN = "boolean"
    DATETIME = "dateTime"  # value is an aware datetime in UTC
    DATE = "date"
    TIME = "time"  # value is a naive time, normalised to UTC
    URI = "uri"  # unquoted URI such as urn:ngsi-ld:Person:1 (compared as a string)


ScalarValue = int | float | str | bool | datetime | date | time


@dataclass(frozen=True, slots=True)
class Scalar:
    """One literal, already converted to the Python value it is compared as."""

    kind: ValueKind
    value: ScalarValue


@dataclass(frozen=True, slots=True)
class ValueList:
    """``a,b,c``: with ``==`` the target equals one of them, with ``!=`` none of them."""

    items: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Range:
    """``low..high``, both ends included; only valid with ``==`` and ``!=``."""

    low: Scalar
    high: Scalar


QValue = Scalar | ValueList | Range


class Op(StrEnum):
    EQ = "=="
    NE = "!="
    GT = ">"
    GE = ">="
    LT = "<"
    LE = "<="


#: operators that order values; they never match a Relationship (clause 4.9)
ORDERING_OPS = frozenset({Op.GT, Op.GE, Op.LT, Op.LE})

# How unquoted literals and stored strings become comparable values; the evaluator uses
# the same functions on target values, so both sides always agree.

_DATETIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?", re.ASCII
)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_TIME_RE = re.compile(r"(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?", re.ASCII)


def parse_datetime(text: str) -> datetime | None:
    """An RFC 3339 dateTime as an aware UTC datetime (no zone means UTC), else None."""
    if not _DATETIME_RE.fullmatch(text):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_date(text: str) -> date | None:
    if not _DATE_RE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def parse_time(text: str) -> time | None:
    """``hh:mm:ss[.f][Z|±hh:mm]`` as a naive time in UTC, so all times compare."""
    m = _TIME_RE.fullmatch(text)
    if m is None:
        return None
    hh, mm, ss, frac, zone = m.groups()
    if int(hh) > 23 or int(mm) > 59 or int(ss) > 59:
        return None
    micro = int((frac or "0")[:6].ljust(6, "0"))
    value = datetime(2000, 1, 1, int(hh), int(mm), int(ss), micro)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        value -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return value.time()


# --------------------------------------------------------------------------- q: paths


@dataclass(frozen=True, slots=True)
class AttrPath:
    """Where a query term looks.

    ``attr`` is the attribute IRI (or, for ``createdAt``/``modifiedAt``/``deletedAt``, the
    entity-level system member's short name); ``sub`` walks sub-attributes and core members
    (``temperature.observedAt``); ``compound`` walks keys inside the value
    (``address[city]``, ``color[en]``, ``color[*]``). ``linked`` follows the attribute as a
    Relationship to other entities (``managedBy{name}``, clause 4.9 linked entity queries);
    when set, ``sub`` and ``compound`` are empty.
    """

    attr: str
    sub: tuple[str, ...] = ()
    compound: tuple[str, ...] = ()
    linked: Linked | None = None

    @property
    def is_entity_member(self) -> bool:
        """True for entity-level system members (createdAt, ...), which are not attributes."""
        return self.attr in ENTITY_MEMBERS


@dataclass(frozen=True, slots=True)
class Linked:
    """``attr{Type1,Type2:path}``: evaluate ``path`` on the entities the attribute points to.

    ``types`` are expanded entity type hints; empty means any type.
    """

    types: tuple[str, ...]
    path: AttrPath


# --------------------------------------------------------------------------- q: expressions


@dataclass(frozen=True, slots=True)
class Exists:
    """A bare attribute path: the target element exists."""

    path: AttrPath


@dataclass(frozen=True, slots=True)
class Comparison:
    path: AttrPath
    op: Op
    value: QValue


@dataclass(frozen=True, slots=True)
class Pattern:
    """``~=`` (or ``!~=`` when ``negated``); ``regex`` is a Python ``re`` pattern."""

    path: AttrPath
    regex: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Not:
    """``!attr``: negated existence (an extension several brokers and the suite use)."""

    child: QExpr


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[QExpr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[QExpr, ...]


QTerm = Exists | Comparison | Pattern
QExpr = Exists | Comparison | Pattern | Not | And | Or

# --------------------------------------------------------------------------- entity types


@dataclass(frozen=True, slots=True)
class TypeName:
    iri: str


@dataclass(frozen=True, slots=True)
class TypeAnd:
    children: tuple[TypeExpr, ...]


@dataclass(frozen=True, slots=True)
class TypeOr:
    children: tuple[TypeExpr, ...]


@dataclass(frozen=True, slots=True)
class TypeAny:
    """``type=*``: every entity type."""


TypeExpr = TypeName | TypeAnd | TypeOr | TypeAny

# --------------------------------------------------------------------------- scopes


@dataclass(frozen=True, slots=True)
class ScopeTerm:
    """``/a/+/c`` (``levels``, ``+`` matches one level) optionally followed by ``/#``.

    ``descendants`` also matches every scope below; ``/#`` alone is ``levels=()`` with
    ``descendants=True`` and matches any entity that has a scope at all.
    """

    levels: tuple[str, ...]
    descendants: bool = False


@dataclass(frozen=True, slots=True)
class ScopeAnd:
    children: tuple[ScopeExpr, ...]


@dataclass(frozen=True, slots=True)
class ScopeOr:
    children: tuple[ScopeExpr, ...]


ScopeExpr = ScopeTerm | ScopeAnd | ScopeOr
