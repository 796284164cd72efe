"""The NGSI-LD filter languages: ``q`` (clause 4.9), ``type`` (4.17) and ``scopeQ`` (4.19).

Parse once with ``parse_q`` / ``parse_type_expr`` / ``parse_scope_q`` (names are expanded
with the request's @context at that moment), then evaluate the frozen trees (the nodes of
``ast``) as often as needed with ``matches_q`` / ``matches_type`` / ``matches_scope``, or
hand them to a store that translates them to SQL.
"""

from __future__ import annotations

from urbanos.core.query.evaluate import (
    EntityResolver,
    attribute_names,
    linked_depth,
    matches_q,
    matches_scope,
    matches_type,
)
from urbanos.core.query.parse import MAX_DEPTH, MAX_LENGTH, parse_q, parse_scope_q, parse_type_expr

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "EntityResolver",
    "attribute_names",
    "linked_depth",
    "matches_q",
    "matches_scope",
    "matches_type",
    "parse_q",
    "parse_scope_q",
    "parse_type_expr",
]
