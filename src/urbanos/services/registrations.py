"""Context source registrations (clauses 5.9, 5.10): what other brokers hold, per tenant.

The document model and its rules are ``core.registration``; the documents live in the
registration store (every backend, shared by the nodes of one PostgreSQL database). This
service is what the API and, later, distributed operations use.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable

from urbanos.core.distributed_writes import Conflict
from urbanos.core.policy import Action
from urbanos.core.registration import (
    parse_registration,
    patch_registration,
    render_registration,
)
from urbanos.core.registration_info import conflicts
from urbanos.core.registration_query import RegistrationQuery
from urbanos.core.timeutil import now_iso
from urbanos.errors import AlreadyExists, ResourceNotFound
from urbanos.outbound import OutboundPolicy
from urbanos.services.guard import OPEN_GUARD, Guard
from urbanos.services.subscriptions import check_endpoint
from urbanos.storage.base import EntityStore
from urbanos.storage.registrations import RegistrationStore
from urbanos.types import JSON, JSONObject, Terms

#: a context source is called over HTTP
_SCHEMES = frozenset({"http", "https"})
log = logging.getLogger("urbanos.registrations")
#: told of each registration write: (tenant, before, after), None for absent
ChangeHook = Callable[[str, JSONObject | None, JSONObject | None], Awaitable[None]]


_NAMES = ("propertyNames", "relationshipNames")


def _types(doc: JSONObject) -> set[str]:
    kind = doc.get("type", ())
    return {kind} if isinstance(kind, str) else {str(k) for k in kind}


class RegistrationService:
    def __init__(self, store: RegistrationStore, *, policy: OutboundPolicy | None = None,
                 own_origins: Iterable[tuple[str, int]] = (),
                 clock: Callable[[], str] = now_iso,
                 entities: EntityStore | None = None) -> None:
        """``policy`` and ``own_origins`` check each endpoint as the broker will call it:
        the outbound policy, and never the broker itself. ``entities`` (the local store)
        lets a new exclusive or redirect registration be refused over local data."""
        self.store = store
        self.entities = entities
        self.policy = policy or OutboundPolicy()
        self.own_origins = tuple(own_origins)
        self.clock = clock
        #: told of every registration created, updated or deleted, once written (the
        #: csource subscriptions' notifications, clause 5.11.7)
        self.on_change: ChangeHook | None = None

    async def _changed(self, tenant: str, before: JSONObject | None,
                       after: JSONObject | None) -> None:
        """Announce a committed write; its failure is logged, the write stands."""
        if self.on_change is None:
            return
        try:
            await self.on_change(tenant, before, after)
        except Exception:  # noqa: BLE001 - the registration is written: do not fail it
            log.exception("announcing the change of registration %s failed",
                          (after or before or {}).get("id"))

    async def _check(self, tenant: str, doc: JSONObject) -> None:
        """What a document alone cannot tell: its endpoint as the broker will call it, and
        no overlap with another's exclusive registration (clause 4.3.6.3: 409)."""
        check_endpoint(str(doc["endpoint"]), self.policy, self.own_origins, _SCHEMES)
        for other in await self.store.all(tenant):
            if other["id"] != doc["id"] and conflicts(doc, other):
                raise AlreadyExists(
                    f"registration {doc['id']} overlaps the exclusive registration "
                    f"{other['id']}")

    async def _check_local(self, tenant: str, doc: JSONObject) -> None:
        """Clause 5.9.2.4: a redirect registration may not cover an existing local entity,
        an exclusive one may not cover an attribute an existing local entity has (409
        Conflict). Only the entities named by ``id`` are looked up: one read, no scan."""
        mode = doc.get("mode")
        if self.entities is None or mode not in ("exclusive", "redirect"):
            return
        named = [(info, e) for info in doc["information"] for e in info.get("entities", ())
                 if "id" in e]
        if not named:
            return
        found = await self.entities.get_many(tenant, sorted({str(e["id"]) for _, e in named}))
        for info, entity in named:
            local = found.get(str(entity["id"]))
            if local is None or not (_types(entity) & _types(local)):
                continue
            names = {n for key in _NAMES for n in info.get(key, ())}
            held = set(local.get("attrs", {}))
            if mode == "redirect" and (not names or names & held):
                raise Conflict(f"entity {entity['id']} exists locally: a redirect "
                               f"registration may not cover it")
            if mode == "exclusive" and names & held:
                raise Conflict(f"entity {entity['id']} exists locally with an attribute of "
                               f"the exclusive registration {doc['id']}")

    async def create(self, tenant: str, payload: JSON, terms: Terms, *,
                     guard: Guard = OPEN_GUARD) -> str:
        """Register Context Source (5.9.2); returns the id (made when absent). Registering
        changes what the tenant's readers are shown: tenant administrators only."""
        guard.require(Action.ADMIN)
        doc = parse_registration(
            payload, terms, self.clock(),
            new_id=lambda: f"urn:ngsi-ld:ContextSourceRegistration:{uuid.uuid4()}",
        )
        await self._check(tenant, doc)
        await self._check_local(tenant, doc)
        await self.store.insert(tenant, doc)
        await guard.record_ok([str(doc["id"])])
        await self._changed(tenant, None, doc)
        return str(doc["id"])

    async def update(self, tenant: str, registration_id: str, fragment: JSON, terms: Terms,
                     *, guard: Guard = OPEN_GUARD) -> None:
        """Update Context Source Registration (5.9.3)."""
        guard.require(Action.ADMIN)
        before = await self._stored(tenant, registration_id)
        doc = patch_registration(before, fragment, terms, self.clock())
        await self._check(tenant, doc)
        if not await self.store.replace(tenant, doc):
            raise ResourceNotFound(f"registration {registration_id} not found")
        await guard.record_ok([registration_id])
        await self._changed(tenant, before, doc)

    async def delete(self, tenant: str, registration_id: str, *,
                     guard: Guard = OPEN_GUARD) -> None:
        """Delete Context Source Registration (5.9.4)."""
        guard.require(Action.ADMIN)
        before = await self.store.get(tenant, registration_id) if self.on_change else None
        if not await self.store.delete(tenant, registration_id):
            raise ResourceNotFound(f"registration {registration_id} not found")
        await guard.record_ok([registration_id])
        if before is not None:
            await self._changed(tenant, before, None)

    async def retrieve(self, tenant: str, registration_id: str, terms: Terms, *,
                       sys_attrs: bool = False, guard: Guard = OPEN_GUARD) -> JSONObject:
        """Retrieve Context Source Registration (5.10.1)."""
        guard.require_some(Action.READ)
        doc = await self._stored(tenant, registration_id)
        return render_registration(doc, terms, self.clock(), sys_attrs=sys_attrs)

    async def query(self, tenant: str, terms: Terms, query: RegistrationQuery, *,
                    limit: int, offset: int, sys_attrs: bool = False,
                    guard: Guard = OPEN_GUARD) -> tuple[list[JSONObject], int]:
        """Query Context Source Registrations (5.10.2): those ``query`` matches
        (``core.registration_query``), in creation order, and their total."""
        guard.require_some(Action.READ)
        now = self.clock()
        found = [d for d in await self.store.all(tenant) if query.matches(d)]
        docs = found[offset:offset + limit]
        return [render_registration(d, terms, now, sys_attrs=sys_attrs) for d in docs], len(found)

    async def _stored(self, tenant: str, registration_id: str) -> JSONObject:
        doc = await self.store.get(tenant, registration_id)
        if doc is None:
            raise ResourceNotFound(f"registration {registration_id} not found")
        return doc
