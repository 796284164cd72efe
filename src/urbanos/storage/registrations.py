"""Where context source registrations are kept: the RegistrationStore interface.

A store keeps, per tenant, each registration's document in creation order, and the
bookkeeping of the requests forwarded to its source (``record_use``) apart from it: the
federation side counting a request never overwrites a concurrent Update Registration, and
an update never resets the counters. Readers see both as one document: the counters are
the members ``USE_MEMBERS`` (present once a use was recorded); those members are dropped
from what ``insert`` and ``replace`` are given, so only ``record_use`` sets them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from urbanos.types import JSONObject

__all__ = ["USE_MEMBERS", "RegistrationStore", "RegistrationUse", "with_use", "without_use"]

#: the members of a registration that only ``record_use`` writes (clause 5.2.9)
USE_MEMBERS = ("timesSent", "timesFailed", "lastSuccess", "lastFailure", "status")


class RegistrationStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def insert(self, tenant: str, doc: JSONObject) -> None:
        """Add a registration; AlreadyExists when the tenant has one with that id."""
        ...

    async def replace(self, tenant: str, doc: JSONObject) -> bool:
        """Replace the document (the counters stay); False when there is no such one."""
        ...

    async def delete(self, tenant: str, registration_id: str) -> bool: ...

    async def get(self, tenant: str, registration_id: str) -> JSONObject | None: ...

    async def all(self, tenant: str) -> list[JSONObject]:
        """Every registration of the tenant, in creation order."""
        ...

    async def page(self, tenant: str, limit: int, offset: int) -> tuple[list[JSONObject], int]:
        """One page in creation order, and how many the tenant has."""
        ...

    async def record_use(self, tenant: str, registration_id: str, use: RegistrationUse) -> None:
        """Add ``use`` (requests counted since the last call) to the stored counters:
        counts summed, times and status replaced where given; an unknown id is ignored."""
        ...


@dataclass(frozen=True, slots=True)
class RegistrationUse:
    """The counters of one registration as the SQL stores keep them (columns)."""

    times_sent: int = 0
    times_failed: int = 0
    last_success: str | None = None
    last_failure: str | None = None
    status: str | None = None

    def plus(self, more: RegistrationUse) -> RegistrationUse:
        """These counters followed by ``more`` (the requests counted after them)."""
        return RegistrationUse(
            self.times_sent + more.times_sent, self.times_failed + more.times_failed,
            more.last_success or self.last_success, more.last_failure or self.last_failure,
            more.status or self.status)

    def after(self, *, ok: bool, at: str) -> RegistrationUse:
        """The counters after one more request."""
        if ok:
            return RegistrationUse(self.times_sent + 1, self.times_failed, at,
                                   self.last_failure, "ok")
        return RegistrationUse(self.times_sent + 1, self.times_failed + 1, self.last_success,
                               at, "failed")


def without_use(doc: JSONObject) -> JSONObject:
    """The document to store: a shallow copy without the counters."""
    return {k: v for k, v in doc.items() if k not in USE_MEMBERS}


def with_use(doc: JSONObject, use: RegistrationUse) -> JSONObject:
    """The stored document with its counters, as readers get it (``doc`` is modified)."""
    if use.times_sent == 0 and use.status is None:
        return doc
    doc["timesSent"] = use.times_sent
    doc["timesFailed"] = use.times_failed
    if use.last_success is not None:
        doc["lastSuccess"] = use.last_success
    if use.last_failure is not None:
        doc["lastFailure"] = use.last_failure
    if use.status is not None:
        doc["status"] = use.status
    return doc
