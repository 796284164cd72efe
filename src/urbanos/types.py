"""Shared type aliases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

JSON = Any
JSONObject = dict[str, Any]
EntityId = str
#: a fully expanded IRI (attribute name, entity type)
Term = str
#: expands a compact term to its IRI using the request's active @context
Expander = Callable[[str], str]
#: compacts an IRI to the shortest term of the request's active @context
Compactor = Callable[[str], str]


class Terms(Protocol):
    """What the entity model needs of a processed @context (see core.jsonld.TermMap)."""

    def expand(self, term: str) -> str: ...

    def compact(self, iri: str) -> str: ...
