"""The scalars an attribute instance holds, as index rows for q comparisons.

Both SQL stores keep one row per (attribute, number or string) an instance holds and use it
as a *superset* filter: every entity a comparison can select has such a row, and
``core.selection.matches`` decides the rest. Extra rows are harmless; a missing one would
lose matches, so this is the one definition both stores index with.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from urbanos.types import JSONObject

#: the members of an instance that hold the values q compares
MEMBERS = ("value", "object", "vocab", "json", "valueList", "objectList", "languageMap")


def scalars(instance: JSONObject) -> Iterator[tuple[float | None, str | None]]:
    """(number, string) pairs: numbers by value, strings for equality."""
    for member in MEMBERS:
        if member in instance:
            yield from _flatten(instance[member])


def _flatten(value: Any) -> Iterator[tuple[float | None, str | None]]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield float(value), None
    elif isinstance(value, str):
        yield None, value
    elif isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    elif isinstance(value, dict) and set(value) == {"object"}:  # objectList entries
        yield from _flatten(value["object"])
    elif isinstance(value, dict) and all(isinstance(v, str | list) for v in value.values()):
        for v in value.values():  # a languageMap
            yield from _flatten(v)


def indexed_number(number: int | float) -> float:
    """A q literal as the double the index holds: an integer beyond 64 bits cannot be bound
    as is, and one beyond a double's range compares as an infinity."""
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf
