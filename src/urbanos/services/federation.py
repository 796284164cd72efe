"""Forwarding to context sources (clause 4.3.6): concurrent fan-out over httpx with the
outbound-URL policy, per-registration timeouts, cooldown after failures, ``Via`` and the
registration's counters; what to send and how to merge is ``core.federation``.

A source that is slow, failing or hostile never fails the caller's request: its reply
carries a ``warning`` instead of a body, and the endpoint answers with what the others gave.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from urbanos.core.federation import Target

__all__ = ["Federation", "Reply"]


@dataclass(slots=True)
class Reply:
    """One source's answer. ``body`` is parsed, size-bounded JSON, or None when the source
    failed; then ``warning`` is the NGSILD-Warning value to report."""

    target: Target
    status: int | None
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    warning: str | None = None


class Federation:
    """One per broker process; holds the httpx client and each tenant's registrations."""

    async def targets(
        self, tenant: str, operation: str, *, ids: set[str] | None = None,
        types: set[str] | None = None, attrs: set[str] | None = None,
        id_pattern: str | None = None, via: str | None = None,
    ) -> list[Target]:
        """The registrations ``operation`` goes to (``core.federation.select_targets``),
        minus those cooling down; [] at almost no cost when the tenant has none."""
        raise NotImplementedError

    async def send(
        self, tenant: str, targets: Sequence[Target], method: str, path: str, *,
        params: Sequence[tuple[str, str]] = (), body: bytes | None = None,
        content_type: str | None = None, link: str | None = None, via: str | None = None,
    ) -> list[Reply]:
        """The same request to every target at once; ``path`` is appended to each
        endpoint (e.g. ``/ngsi-ld/v1/entities/urn:x``). Each request carries Via, Accept,
        NGSILD-Tenant (the registration's ``tenant``, else the caller's) and the
        registration's ``contextSourceInfo`` pairs; it is bounded by the registration's
        ``management.timeout`` and the response size limit, and its outcome is recorded in
        the registration's status and counters."""
        raise NotImplementedError
