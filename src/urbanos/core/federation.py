"""Distributed operations (GS CIM 009 clause 4.3.6), the pure part: which registrations an
operation is forwarded to, what each is asked, and how the answers are merged.

No I/O here: ``services.federation`` sends the requests this module plans and hands the
parsed answers back to ``merge_entities``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from urbanos.types import JSONObject

__all__ = ["Target", "select_targets", "merge_entities", "parse_via", "add_via", "warning"]


@dataclass(frozen=True, slots=True)
class Target:
    """One registration chosen for one forwarded operation.

    ``attrs`` are the expanded attribute names the source is asked for (the caller's
    narrowed to what the registration holds, clause 4.3.6.1); None = every attribute.
    """

    doc: JSONObject
    mode: str
    attrs: frozenset[str] | None


def select_targets(
    docs: Iterable[JSONObject], operation: str, *, now: str,
    ids: set[str] | None = None, types: set[str] | None = None,
    attrs: set[str] | None = None, id_pattern: str | None = None,
    via: Sequence[str] = (),
) -> list[Target]:
    """The registrations ``operation`` is forwarded to: they support it (clause 4.20),
    cover the entities and attributes asked, are not expired, and their source's alias
    is not already in ``via`` (clause 6.3.18)."""
    raise NotImplementedError


def merge_entities(fragments: Sequence[JSONObject]) -> JSONObject:
    """Fragments of one entity (stored form) from several sources merged per clause
    4.5.5.3: per attribute and datasetId, drop expired instances, then keep the latest
    observedAt, else the latest modifiedAt."""
    raise NotImplementedError


def parse_via(header: str | None) -> list[str]:
    """The pseudonyms/hosts named by a Via header (RFC 9110 7.6.3), in order."""
    raise NotImplementedError


def add_via(header: str | None, alias: str) -> str:
    """The Via header a forwarded request carries: the incoming one plus this broker."""
    raise NotImplementedError


def warning(code: int, agent: str, text: str) -> str:
    """One NGSILD-Warning value (clause 6.3.17): 199 no answer in time or loop, 299 an
    error from the source, 111 an invalid payload."""
    raise NotImplementedError
