"""Entity ordering (clause 4.23): ``orderBy`` terms, collations and ordering by distance.

An ``orderBy`` is a list of terms ``path[;direction]``; the direction is ``asc`` (the
default), ``desc``, ``dist-asc`` or ``dist-desc`` (distance from a reference geometry, for
GeoProperties). A path is an entity member (``id``, ``type``, ``scope``, ``createdAt``,
``modifiedAt``), or an attribute with optional sub-attribute or core member steps and a
trailing ``[key.key]`` into a compound value: ``name``, ``name.createdAt``,
``name.subProperty``, ``address[city]``.

Values of different kinds rank numbers, then strings, then booleans, then objects and
arrays; an entity without the value comes last whatever the direction. Strings compare by
code point unless a collation (an IETF BCP 47 tag, RFC 6067 ``-u-co-`` extensions allowed)
is given: then accents and case only break ties between equal base letters, as the root
collation of the Unicode Collation Algorithm does (``phonebk`` also folds German umlauts to
``ae``/``oe``/``ue``). Ties keep the store's order, so sorting is stable.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from urbanos.core import geo
from urbanos.core.model import CORE_MEMBER_BY_IRI, CORE_MEMBERS, VALUE_MEMBER
from urbanos.errors import BadRequestData
from urbanos.types import JSON, JSONObject

_ENTITY_MEMBERS = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt"})
_DIRECTIONS = frozenset({"asc", "desc", "dist-asc", "dist-desc"})
_PATH_RE = re.compile(r"([^\[\].;,\s]+(?:\.[^\[\].;,\s]+)*)(?:\[([^\[\];,\s]+)\])?")
_BCP47_RE = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")
_ABSENT = object()


@dataclass(frozen=True, slots=True)
class OrderTerm:
    """One ordering term: where the value is and how it orders."""

    member: str | None  # an entity member, or None for an attribute
    attr: str | None  # expanded attribute IRI
    sub: tuple[str, ...] = ()  # sub-attribute IRIs or core member short names
    keys: tuple[str, ...] = ()  # compound value keys
    descending: bool = False
    distance: bool = False


@dataclass(frozen=True, slots=True)
class Ordering:
    terms: tuple[OrderTerm, ...]
    collation: str | None = None
    reference: dict[str, Any] | None = None  # GeoJSON geometry for distance terms


def parse_ordering(
    order_by: str | Sequence[str],
    expand: Callable[[str], str],
    *,
    collation: str | None = None,
    coordinates: JSON = None,
    geometry: str | None = None,
) -> Ordering:
    """``orderBy`` (a comma-separated string or a list of terms) into an Ordering."""
    if isinstance(order_by, str):
        raw_terms = order_by.split(",")
    else:
        raw_terms = list(order_by)
    if not raw_terms:
        raise BadRequestData("orderBy must name at least one term")
    terms = tuple(_term(raw, expand) for raw in raw_terms)
    if collation is not None:
        check_collation(collation)
    reference = None
    if any(t.distance for t in terms):
        if coordinates is None:
            raise BadRequestData("ordering by distance needs the reference coordinates")
        points = geo.coordinates_of(coordinates, "ordering coordinates")
        reference = {"type": geometry or "Point", "coordinates": points}
        geo.validate_geometry(reference)
    return Ordering(terms, collation, reference)


def _term(raw: object, expand: Callable[[str], str]) -> OrderTerm:
    if not isinstance(raw, str) or not raw.strip():
        raise BadRequestData("orderBy terms must be non-empty strings")
    path, _, direction = raw.strip().partition(";")
    direction = direction.strip() or "asc"
    if direction not in _DIRECTIONS:
        raise BadRequestData(f"orderBy: unknown direction {direction!r}")
    match = _PATH_RE.fullmatch(path.strip())
    if match is None:
        raise BadRequestData(f"orderBy: invalid path {path!r}")
    steps = match.group(1).split(".")
    keys = tuple(match.group(2).split(".")) if match.group(2) else ()
    descending = direction in ("desc", "dist-desc")
    distance = direction.startswith("dist-")
    if steps[0] in _ENTITY_MEMBERS and len(steps) == 1 and not keys:
        if distance:
            raise BadRequestData(f"orderBy: {steps[0]} cannot be ordered by distance")
        return OrderTerm(steps[0], None, descending=descending)
    attr = expand(steps[0])
    sub = tuple(_sub_step(s, expand) for s in steps[1:])
    return OrderTerm(None, attr, sub, keys, descending, distance)


def _sub_step(name: str, expand: Callable[[str], str]) -> str:
    if name in CORE_MEMBERS:
        return name
    iri = expand(name)
    return CORE_MEMBER_BY_IRI.get(iri, iri)


def check_collation(tag: str) -> None:
    if not _BCP47_RE.fullmatch(tag):
        raise BadRequestData(f"collation {tag!r} is not a BCP 47 language tag")


# --------------------------------------------------------------------------- values


def _value(entity: JSONObject, term: OrderTerm, lang: str | None, ordering: Ordering) -> Any:
    if term.member is not None:
        value = entity.get(term.member, _ABSENT)
        if term.member in ("type", "scope") and isinstance(value, list):
            return value[0] if value else _ABSENT
        return value
    instances = entity["attrs"].get(term.attr) or []
    node: Any = next((i for i in instances if "datasetId" not in i), None)
    if node is None and instances:
        node = instances[0]
    for step in term.sub:
        if not isinstance(node, dict):
            return _ABSENT
        node = node.get(step, _ABSENT) if step in CORE_MEMBERS else node.get(step)
        if step in CORE_MEMBERS:
            return _walk(node, term.keys)
    if not isinstance(node, dict):
        return _ABSENT
    if term.distance:
        shape = node.get("value")
        if node.get("type") != "GeoProperty" or ordering.reference is None:
            return _ABSENT
        if not isinstance(shape, dict):
            return _ABSENT
        try:
            return geo.geo_distance(shape, ordering.reference)
        except Exception:  # noqa: BLE001 - an unusable stored shape sorts as absent
            return _ABSENT
    kind = node.get("type", "Property")
    value = node.get(VALUE_MEMBER.get(kind, "value"), _ABSENT)
    if kind == "LanguageProperty" and isinstance(value, dict) and value:
        value = value.get(lang, next(iter(value.values()))) if lang else next(iter(value.values()))
    return _walk(value, term.keys)


def _walk(value: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return _ABSENT
        value = value[key]
    return value


# --------------------------------------------------------------------------- comparing


def _rank(value: Any, collation: str | None) -> tuple[int, Any]:
    if isinstance(value, bool):
        return 2, value
    if isinstance(value, (int, float)):
        return 0, value
    if isinstance(value, str):
        return 1, collation_key(value, collation) if collation else value
    return 3, orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def collation_key(text: str, collation: str) -> tuple[str, str, tuple[int, ...]]:
    """A sort key close to the UCA root collation: base letters, then accents, then case."""
    if "phonebk" in collation.lower():
        for umlaut, spelled in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"),
                                ("Ä", "Ae"), ("Ö", "Oe"), ("Ü", "Ue")):
            text = text.replace(umlaut, spelled)
    decomposed = unicodedata.normalize("NFD", text)
    base = "".join(c for c in decomposed if not unicodedata.combining(c))
    accents = "".join(c if unicodedata.combining(c) else "\0" for c in decomposed)
    return base.casefold(), accents, tuple(0 if c.islower() or not c.isalpha() else 1 for c in base)


def sort_entities(
    entities: list[JSONObject], ordering: Ordering, lang: str | None = None
) -> list[JSONObject]:
    """The entities in the order an Ordering asks for (a stable sort)."""
    keyed = [
        ([_value(e, t, lang, ordering) for t in ordering.terms], e) for e in entities
    ]

    def compare(a: tuple[list[Any], JSONObject], b: tuple[list[Any], JSONObject]) -> int:
        for term, x, y in zip(ordering.terms, a[0], b[0], strict=True):
            if x is _ABSENT or y is _ABSENT:
                if x is _ABSENT and y is _ABSENT:
                    continue
                return 1 if x is _ABSENT else -1
            kx, ky = _rank(x, ordering.collation), _rank(y, ordering.collation)
            if kx[0] != ky[0]:
                result = -1 if kx[0] < ky[0] else 1
            elif kx[1] == ky[1]:
                continue
            else:
                result = -1 if kx[1] < ky[1] else 1
            return -result if term.descending else result
        return 0

    return [e for _, e in sorted(keyed, key=functools.cmp_to_key(compare))]
