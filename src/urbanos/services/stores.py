"""The stores of one process, for the app to open and hand to the services: HTTP never
imports a store (``storage.open_stores`` builds them for a URL)."""

from __future__ import annotations

from urbanos.storage import Stores, open_stores
from urbanos.storage.access import (
    AccessStore,
    ApiKey,
    AuditFilter,
    AuditNote,
    AuditRecord,
    Issuer,
)
from urbanos.storage.base import DEFAULT_TENANT, EntityStore
from urbanos.storage.registrations import USE_MEMBERS, RegistrationStore

__all__ = [
    "DEFAULT_TENANT",
    "USE_MEMBERS",
    "AccessStore",
    "ApiKey",
    "AuditFilter",
    "AuditNote",
    "AuditRecord",
    "EntityStore",
    "Issuer",
    "RegistrationStore",
    "Stores",
    "open_stores",
]
