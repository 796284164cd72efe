"""What one entity write changed: the unit that notifications and history consume."""

from __future__ import annotations

from dataclasses import dataclass

from urbanos.types import JSONObject


@dataclass(frozen=True, slots=True)
class Change:
    """An entity's state before and after one write (None: did not exist / was deleted).

    ``seq`` orders changes per store; ``at`` is when the write committed (RFC 3339).
    """

    tenant: str
    entity_id: str
    before: JSONObject | None
    after: JSONObject | None
    at: str
    seq: int = 0

    @property
    def created(self) -> bool:
        return self.before is None and self.after is not None

    @property
    def deleted(self) -> bool:
        return self.before is not None and self.after is None
