"""The ``pick`` and ``omit`` projection language (clause 4.21), parsed into a small tree.

A projection lists entity members (``id``, ``type``, ``scope`` or attribute names); ``,``
and ``|`` both separate terms. A term may carry a nested projection in braces that applies
to the entities its Relationship links to (``locatedAt{name,isInCountry{description}}``),
which only has a meaning when linked entities are retrieved (``join``)::

    projection = term *(("," / "|") term)
    term       = member ["{" projection "}"]
    member     = "id" / "type" / "scope" / attribute-name

For ``pick`` a braced term keeps the Relationship itself and narrows the linked entity;
for ``omit`` it removes nothing at its own level and only narrows the linked entity, so
``omit=name,locatedAt{name}`` drops ``name`` on both levels and keeps ``locatedAt``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from urbanos.errors import BadRequestData

#: entity members a projection may name besides attributes, kept unexpanded
ENTITY_MEMBER_NAMES = frozenset({"id", "type", "scope"})

_MEMBER_RE = re.compile(r"[A-Za-z_@][\w\-.:/#@]*")
MAX_PROJECTION_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class Projection:
    """One level of a projection: the terms as (member, nested projection or None)."""

    terms: tuple[tuple[str, Projection | None], ...]

    @property
    def picked(self) -> frozenset[str]:
        """Members kept by ``pick`` at this level (braced terms included)."""
        return frozenset(name for name, _ in self.terms)

    @property
    def omitted(self) -> frozenset[str]:
        """Members removed by ``omit`` at this level (braced terms only narrow deeper)."""
        return frozenset(name for name, sub in self.terms if sub is None)

    def nested(self, member: str) -> Projection | None:
        """The projection for entities linked through ``member``, if one was given."""
        for name, sub in self.terms:
            if name == member and sub is not None:
                return sub
        return None

    @property
    def depth(self) -> int:
        """How many Relationship hops the projection reaches (0 without braces)."""
        return max((1 + sub.depth for _, sub in self.terms if sub is not None), default=0)


def parse_projection(text: str, expand: Callable[[str], str], *, label: str) -> Projection:
    """Parse a pick/omit value; attribute names are expanded, id/type/scope kept as they are."""
    if len(text) > MAX_PROJECTION_LENGTH:
        raise BadRequestData(f"{label} is longer than {MAX_PROJECTION_LENGTH} characters")
    parser = _Parser(text, expand, label)
    projection = parser.projection(0)
    if parser.pos != len(text):
        parser.fail("unexpected character")
    return projection


class _Parser:
    __slots__ = ("expand", "label", "pos", "text")

    def __init__(self, text: str, expand: Callable[[str], str], label: str) -> None:
        self.text = text
        self.expand = expand
        self.label = label
        self.pos = 0

    def fail(self, message: str) -> None:
        shown = repr(self.text[self.pos]) if self.pos < len(self.text) else "the end"
        raise BadRequestData(f"{self.label}: {message} at column {self.pos + 1} ({shown})")

    def projection(self, depth: int) -> Projection:
        if depth > 16:
            self.fail("projection nested too deeply")
        terms = [self.term(depth)]
        while self.pos < len(self.text) and self.text[self.pos] in ",|":
            self.pos += 1
            terms.append(self.term(depth))
        return Projection(tuple(terms))

    def term(self, depth: int) -> tuple[str, Projection | None]:
        match = _MEMBER_RE.match(self.text, self.pos)
        if match is None:
            self.fail("expected a member name")
            raise AssertionError  # fail always raises
        self.pos = match.end()
        raw = match.group(0)
        name = raw if raw in ENTITY_MEMBER_NAMES else self.expand(raw)
        if self.pos < len(self.text) and self.text[self.pos] == "{":
            self.pos += 1
            sub = self.projection(depth + 1)
            if self.pos >= len(self.text) or self.text[self.pos] != "}":
                self.fail("expected '}'")
            self.pos += 1
            return name, sub
        return name, None
