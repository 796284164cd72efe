"""The scalars an attribute instance holds, as index rows for q comparisons.

Both SQL stores keep one row per (attribute, number or string) an instance holds and use it
as a *superset* filter: every entity a comparison can select has such a row, and
``core.selection.matches`` decides the rest. Extra rows are harmless; a missing one would
lose matches, so this is the one definition both stores index with.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from urbanos.core.query.ast import Comparison, Op, Range, Scalar, ValueKind, ValueList
from urbanos.core.timeutil import parse_datetime
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


@dataclass(frozen=True, slots=True)
class ValueTest:
    """What a q comparison asks of the rows of its attribute, in SQL terms any dialect
    renders: ``column op value``, ``num BETWEEN low AND high``, or membership in ``nums``
    or ``strs``. Literals are as the index holds them."""

    kind: Literal["compare", "between", "in"]
    column: str = "num"
    op: str = "="
    values: tuple[Any, ...] = ()
    nums: tuple[float, ...] = ()
    strs: tuple[str, ...] = ()


_SQL_OPS = {Op.EQ: "=", Op.GT: ">", Op.GE: ">=", Op.LT: "<", Op.LE: "<="}


def value_test(expr: Comparison) -> ValueTest | None:
    """The index rows a comparison on a plain attribute path can match, or None when the
    index cannot narrow it (``!=``, booleans, date-times, which compare as instants)."""
    value = expr.value
    if isinstance(value, Scalar):
        column = _column(value)
        if column is None or expr.op == Op.NE or (column == "str" and expr.op != Op.EQ):
            return None
        return ValueTest("compare", column, _SQL_OPS[expr.op], (_literal(value),))
    if expr.op != Op.EQ:
        return None
    if isinstance(value, Range):
        if _column(value.low) != "num" or _column(value.high) != "num":
            return None
        return ValueTest("between", values=(_literal(value.low), _literal(value.high)))
    if isinstance(value, ValueList):
        columns = [_column(item) for item in value.items]
        if any(c is None for c in columns):
            return None
        pairs = list(zip(value.items, columns, strict=True))
        return ValueTest("in", nums=tuple(_literal(i) for i, c in pairs if c == "num"),
                         strs=tuple(_literal(i) for i, c in pairs if c == "str"))
    return None


def _column(value: Scalar) -> str | None:
    """Where a literal is compared: numbers by value, plain strings and URIs by equality.

    Strings that read as date-times are left to Python, which compares them as times.
    """
    if value.kind == ValueKind.NUMBER:
        return "num"
    if value.kind in (ValueKind.STRING, ValueKind.URI) and isinstance(value.value, str):
        return None if parse_datetime(value.value) else "str"
    return None


def _literal(value: Scalar) -> Any:
    number = value.value
    if value.kind == ValueKind.NUMBER and isinstance(number, int | float):
        return indexed_number(number)
    return number


def indexed_number(number: int | float) -> float:
    """A q literal as the double the index holds: an integer beyond 64 bits cannot be bound
    as is, and one beyond a double's range compares as an infinity."""
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf
