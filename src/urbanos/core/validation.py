"""Payload rules of GS CIM 009 that do not depend on the shape of an entity.

Names (clause 4.6.2), identifiers (4.5.1, Annex A), DateTime (4.6.3), language tags and
maps (4.6.5), GeoJSON values (4.7), scopes (4.18) and the NGSI-LD Null (5.2.1, 5.5.4).
``core.entity`` composes them into the entity rules. Everything raises ``BadRequestData``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from typing import Any

from urbanos.core import geo
from urbanos.core.model import NULL_URN
from urbanos.core.timeutil import parse_utc_datetime
from urbanos.errors import BadRequestData

_MAX_NAME = 512
_MAX_URI = 2048
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]+$")
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCOPE = re.compile(r"^/[^/#+\s]+(/[^/#+\s]+)*$")
_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$")

#: Unicode categories an identifier never contains: controls, format characters (bidi
#: overrides, zero-width characters, BOM), surrogates, private use, unassigned code points
#: and noncharacters, and every kind of space
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
#: code points that render as nothing although their category is a letter, mark or symbol:
#: Unicode's Default_Ignorable_Code_Point ranges outside the categories above, and the blank
#: Braille pattern
_HIDDEN_RANGES = (
    (0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
    (0x2800, 0x2800), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)

GEOMETRY_TYPES = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"}
)


def _hidden(char: str) -> bool:
    if unicodedata.category(char) in _HIDDEN_CATEGORIES:
        return True
    point = ord(char)
    return any(low <= point <= high for low, high in _HIDDEN_RANGES)


def has_hidden_characters(text: str) -> bool:
    """Whether ``text`` holds a character that does not show: such an id reads as another."""
    if text.isascii():
        return _ASCII_CONTROL.search(text) is not None
    return any(_hidden(c) for c in text)


def is_uri(value: object) -> bool:
    """An absolute URI or IRI (RFC 3986/3987) without invisible characters."""
    return isinstance(value, str) and len(value) <= _MAX_URI and _uri_ok(value)


@lru_cache(maxsize=65536)  # attribute IRIs, datasetIds and targets repeat across a batch
def _uri_ok(value: str) -> bool:
    return _URI.match(value) is not None and not has_hidden_characters(value)


def check_entity_id(value: object) -> str:
    """An entity id: a URI, and never the NGSI-LD Null."""
    if not is_uri(value) or value == NULL_URN:
        raise BadRequestData(f"entity id must be a URI, got {value!r}")
    assert isinstance(value, str)
    return value


def _is_simple_name(text: str) -> bool:
    first = text[:1]
    if not first or not unicodedata.category(first).startswith("L"):
        return False
    return all(c == "_" or unicodedata.category(c)[0] in "LN" for c in text[1:])


def is_name(value: object) -> bool:
    """Clause 4.6.2: a letter then letters, digits or ``_``; ``prefix:name``; or an IRI."""
    return isinstance(value, str) and 0 < len(value) <= _MAX_NAME and _valid_name(value)


@lru_cache(maxsize=4096)  # the same few names arrive with every entity of a batch
def _valid_name(value: str) -> bool:
    if value == NULL_URN:
        return False
    if _is_simple_name(value):
        return True
    prefix, colon, rest = value.partition(":")
    if colon and _is_simple_name(prefix) and _is_simple_name(rest):
        return True
    return is_uri(value)


def check_name(name: object, what: str = "attribute name") -> str:
    if not is_name(name):
        raise BadRequestData(f"invalid {what}: {name!r}")
    assert isinstance(name, str)
    return name


def check_scopes(value: object) -> list[str]:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str) or not _SCOPE.match(item):
            raise BadRequestData(f"invalid scope: {item!r}")
    return list(items)


def check_datetime(value: object, what: str) -> str:
    """Clause 4.6.3: a DateTime is UTC, written with a trailing ``Z`` and no offset."""
    if not is_utc_datetime(value):
        raise BadRequestData(f"{what} is not a UTC date-time (YYYY-MM-DDThh:mm:ss[.s]Z): {value!r}")
    assert isinstance(value, str)
    return value


def is_utc_datetime(value: object) -> bool:
    """Whether ``value`` is a DateTime as clause 4.6.3 writes it."""
    return isinstance(value, str) and _utc_datetime_ok(value)


@lru_cache(maxsize=4096)  # the instances of a write, and of a batch, share their timestamps
def _utc_datetime_ok(value: str) -> bool:
    return parse_utc_datetime(value) is not None


def is_language_tag(tag: object) -> bool:
    """A BCP 47 (RFC 5646) shaped tag, or ``@none`` for text in no particular language."""
    return tag == "@none" or (isinstance(tag, str) and _LANGUAGE_TAG.match(tag) is not None)


def check_language_map(value: object, what: str) -> dict[str, Any]:
    """Clause 4.6.5: language tags to a string or an array of strings."""
    if not isinstance(value, dict) or not value:
        raise BadRequestData(f"{what} needs a non-empty map of language tags to text")
    for tag, text in value.items():
        if not is_language_tag(tag):
            raise BadRequestData(f"{what} has an invalid language tag {tag!r}")
        texts = text if isinstance(text, list) else [text]
        if not all(isinstance(t, str) for t in texts):
            raise BadRequestData(f"{what}: the text for {tag!r} must be a string or strings")
    return value


def looks_like_geometry(value: object) -> bool:
    """A JSON object shaped like GeoJSON (a geometry type and coordinates or members)."""
    if not isinstance(value, dict) or ("coordinates" not in value and "geometries" not in value):
        return False
    gtype = value.get("type")
    return isinstance(gtype, str) and (gtype in GEOMETRY_TYPES or gtype == "GeometryCollection")


def check_geometry(value: object, what: str) -> dict[str, Any]:
    """Clause 4.7: a GeoJSON geometry other than GeometryCollection, or the same geometry
    encoded as a JSON string (which is decoded)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise BadRequestData(f"{what}: the string is not an encoded GeoJSON geometry") from None
    if isinstance(value, dict) and value.get("type") == "GeometryCollection":
        raise BadRequestData(f"{what}: GeometryCollection is not a supported geometry")
    try:
        geo.validate_geometry(value)
    except BadRequestData as exc:
        raise BadRequestData(f"{what}: {exc.detail}") from None
    assert isinstance(value, dict)
    return value


def is_geometry(value: object) -> bool:
    """Whether ``value`` is a supported, well-formed geometry object (for type inference)."""
    if not looks_like_geometry(value):
        return False
    try:
        check_geometry(value, "value")
    except BadRequestData:
        return False
    return True


def contains_null(value: object) -> bool:
    """Whether the NGSI-LD Null appears anywhere in a JSON value."""
    if value == NULL_URN:
        return True
    if isinstance(value, dict):
        return any(contains_null(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_null(v) for v in value)
    return False


def merge_patch_nulls(body: Any) -> Any:
    """An ``application/merge-patch+json`` body with its deletions (JSON null as an object
    member, RFC 7396) written as the NGSI-LD Null that the entity rules understand."""
    if isinstance(body, dict):
        return {k: NULL_URN if v is None else merge_patch_nulls(v) for k, v in body.items()}
    return body  # a merge patch replaces arrays whole: a null in one is data
