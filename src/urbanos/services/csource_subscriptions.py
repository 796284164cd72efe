"""Context source registration subscriptions (clauses 5.11.2 - 5.11.7): their lifecycle,
and which registration changes they are notified of.

The documents live in the subscription store under their own kind (``CSOURCE``): same
table, same delivery bookkeeping as entity subscriptions. Notifications go through the
one delivery engine (``services.notifications``): this service builds each
CsourceNotification as an ``Outgoing`` and hands it to ``notify`` (the engine's, wired
by the app), which records it in the durable outbox and sends it like any other; the
engine reports the outcome back through ``delivered``, which counts it in the store.

What fires a notification:

* a registration created, updated or deleted (``registration_changed``, called by the
  registration service right after its write): ``newlyMatching``, ``updated`` or
  ``noLongerMatching`` to each active subscription without timeInterval that selected
  the registration before or after the change;
* the creation of a subscription, and its update: every registration it selects now,
  as ``newlyMatching``;
* every ``timeInterval`` seconds, every registration it selects (``periodic_due``, run by
  the node that leads periodic notifications).

Nothing is cached: each registration change reads the tenant's csource subscriptions,
so every node of a cluster matches against the subscriptions as they are in the store.
Registration changes are rare beside entity changes; the read is one indexed query.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta

from urbanos.core.csource_subscription import (
    NEWLY_MATCHING,
    CsourceSubscription,
    compile_csource_subscription,
    matching,
    notification_body,
    notification_data,
    parse_csource_subscription,
    patch_csource_subscription,
    render_csource_subscription,
    trigger,
)
from urbanos.core.jsonld import core_term_map
from urbanos.core.notification import notification_headers
from urbanos.core.policy import Action, decide
from urbanos.core.subscription import Outgoing
from urbanos.core.timeutil import format_datetime, now_iso, parse_datetime
from urbanos.errors import NgsiLdError, ResourceNotFound
from urbanos.outbound import OutboundPolicy
from urbanos.services.contexts import ContextService
from urbanos.services.guard import OPEN_GUARD, Guard, principal_record
from urbanos.services.notifications import Matched
from urbanos.services.subscriptions import OWNER, check_endpoint
from urbanos.storage.registrations import RegistrationStore
from urbanos.storage.subscriptions import CSOURCE, StoredSubscription, SubscriptionStore
from urbanos.types import JSON, JSONObject, Terms

__all__ = ["CSOURCE", "CsourceSubscriptionService"]

log = logging.getLogger("urbanos.csource_subscriptions")
Key = tuple[str, str]
#: a longer pause between two ``periodic_due`` calls means another node may have fired
PERIODIC_GAP = timedelta(seconds=5)


class CsourceSubscriptionService:
    def __init__(
        self,
        store: SubscriptionStore,
        registrations: RegistrationStore,
        contexts: ContextService,
        clock: Callable[[], str] = now_iso,
        *,
        policy: OutboundPolicy | None = None,
        own_origins: Iterable[tuple[str, int]] = (),
    ) -> None:
        """``store`` is the subscription store of kind ``CSOURCE``; ``registrations`` is
        read for the registrations a new, updated or periodic subscription selects."""
        self.store = store
        self.registrations = registrations
        self.contexts = contexts
        self.clock = clock
        self.policy = policy if policy is not None else contexts.policy
        self.own_origins = tuple(own_origins)
        #: records notifications for delivery (``NotificationEngine.notify``); None: the
        #: broker delivers nothing (no engine), and nothing is built
        self.notify: Callable[[list[Outgoing]], Awaitable[None]] | None = None
        #: waits for the outcomes of sends in progress (``NotificationEngine.settled``)
        self.outcomes: Callable[[str, str], Awaitable[None]] | None = None
        self._last_fired: dict[Key, str] = {}
        self._firing: dict[Key, str] = {}
        self._next_due: dict[Key, str] = {}
        self._periodic_at: datetime | None = None

    # -- the API operations ------------------------------------------------------------

    async def _resolve_context(self, doc: JSONObject, context: JSON, tenant: str) -> None:
        """As for entity subscriptions: the @context notifications are compacted with."""
        default = await self.contexts.link_url(context, tenant=tenant)
        doc["_context"] = context
        doc["_defaultContext"] = default
        if doc.get("_explicitContext"):
            await self.contexts.term_map(doc["jsonldContext"], tenant=tenant)
        else:
            doc["jsonldContext"] = default

    async def create(self, tenant: str, payload: JSON, terms: Terms, context: JSON, *,
                     guard: Guard = OPEN_GUARD) -> str:
        """Create Csource Registration Subscription (5.11.2); returns the id. The
        registrations it selects now are notified at once (newlyMatching). The caller
        owns it, and must be one who may read registrations and subscribe."""
        guard.require_some(Action.SUBSCRIBE)
        guard.require_some(Action.READ)
        doc = parse_csource_subscription(
            payload, terms, self.clock(),
            new_id=lambda: f"urn:ngsi-ld:Subscription:{uuid.uuid4()}")
        if not guard.open:
            doc[OWNER] = principal_record(guard.principal)
        check_endpoint(doc["notification"]["endpoint"]["uri"], self.policy, self.own_origins)
        await self._resolve_context(doc, context, tenant)
        cs = compile_csource_subscription(doc)
        await self.store.insert(tenant, doc)
        await guard.record_ok([str(doc["id"])])
        await self._initial(tenant, cs)
        return str(doc["id"])

    async def update(self, tenant: str, subscription_id: str, fragment: JSON, terms: Terms,
                     *, guard: Guard = OPEN_GUARD) -> None:
        """Update Csource Registration Subscription (5.11.3); the registrations it selects
        after the update are notified (newlyMatching)."""
        stored = await self._stored(tenant, subscription_id, guard)
        doc = patch_csource_subscription(stored.doc, fragment, terms, self.clock())
        check_endpoint(doc["notification"]["endpoint"]["uri"], self.policy, self.own_origins)
        if isinstance(fragment, dict) and fragment.get("jsonldContext"):
            await self.contexts.term_map(doc["jsonldContext"], tenant=tenant)
        cs = compile_csource_subscription(doc)
        if not await self.store.replace(tenant, doc):
            raise ResourceNotFound(f"subscription {subscription_id} not found")
        self._next_due.pop((tenant, subscription_id), None)
        await guard.record_ok([subscription_id])
        await self._initial(tenant, cs)

    async def delete(self, tenant: str, subscription_id: str, *,
                     guard: Guard = OPEN_GUARD) -> None:
        """Delete Csource Registration Subscription (5.11.6)."""
        if not guard.open:
            await self._stored(tenant, subscription_id, guard)
        if not await self.store.delete(tenant, subscription_id):
            raise ResourceNotFound(f"subscription {subscription_id} not found")
        for table in (self._last_fired, self._firing, self._next_due):
            table.pop((tenant, subscription_id), None)
        await guard.record_ok([subscription_id])

    async def retrieve(self, tenant: str, subscription_id: str, terms: Terms, *,
                       guard: Guard = OPEN_GUARD) -> JSONObject:
        """Retrieve Csource Registration Subscription (5.11.4); the outcomes of sends in
        progress are recorded first (at most 0.5 s), as for entity subscriptions."""
        await self._stored(tenant, subscription_id, guard)
        if self.outcomes is not None:
            await self.outcomes(tenant, subscription_id)
        stored = await self._stored(tenant, subscription_id)
        return render_csource_subscription(stored.doc, terms, stored.stats, self.clock())

    async def query(self, tenant: str, terms: Terms, *, limit: int, offset: int,
                    guard: Guard = OPEN_GUARD) -> tuple[list[JSONObject], int]:
        """Query Csource Registration Subscriptions (5.11.5): one page in creation order
        and the total, of those the caller manages."""
        now = self.clock()
        if _manages(guard, None):
            rows, total = await self.store.page(tenant, limit, offset)
        else:
            mine = [r for r in await self.store.load(tenant) if _manages(guard, r.doc)]
            rows, total = mine[offset:offset + limit], len(mine)
        return [render_csource_subscription(r.doc, terms, r.stats, now) for r in rows], total

    async def _stored(self, tenant: str, subscription_id: str,
                      guard: Guard = OPEN_GUARD) -> StoredSubscription:
        stored = await self.store.get(tenant, subscription_id)
        if stored is None or not _manages(guard, stored.doc):
            raise ResourceNotFound(f"subscription {subscription_id} not found")
        return stored

    # -- notifications -----------------------------------------------------------------

    async def registration_changed(self, tenant: str, before: JSONObject | None,
                                   after: JSONObject | None) -> None:
        """A registration was created (``before`` None), updated or deleted (``after``
        None): record the notifications it fires."""
        if self.notify is None:
            return
        now = self.clock()
        out: list[Outgoing] = []
        for stored in await self.store.load(tenant):
            try:
                cs = compile_csource_subscription(stored.doc)
                fired = trigger(cs, before, after, now)
                if fired is None or self._held_back(cs, tenant, stored, now):
                    continue
                reason, registration = fired
                out.append(await self._outgoing(cs, tenant, [registration], now, reason))
            except Exception:  # noqa: BLE001 - one broken subscription must not stop the others
                log.exception("matching a registration change against %s failed",
                              stored.doc.get("id"))
        await self._record(out)

    async def _initial(self, tenant: str, cs: CsourceSubscription) -> None:
        """The notification of a created or updated subscription: what it selects now."""
        if self.notify is None or cs.sub.time_interval is not None:
            return
        now = self.clock()
        if not cs.sub.active_at(now):
            return
        found = matching(cs, await self.registrations.all(tenant))
        if found:
            await self._record([await self._outgoing(cs, tenant, found, now, NEWLY_MATCHING)])

    async def _record(self, out: list[Outgoing]) -> None:
        if not out:
            return
        for o in out:
            self._firing[(o.tenant, o.subscription_id)] = str(o.body["notifiedAt"])
        assert self.notify is not None
        await self.notify(out)

    def _held_back(self, cs: CsourceSubscription, tenant: str, stored: StoredSubscription,
                   now: str) -> bool:
        """Throttling: no two notifications closer than ``throttling`` seconds."""
        if not cs.sub.throttling:
            return False
        key = (tenant, cs.id)
        last = (self._firing.get(key) or self._last_fired.get(key)
                or stored.stats.last_notification)
        at, current = (parse_datetime(last) if last else None), parse_datetime(now)
        return (at is not None and current is not None
                and current < at + timedelta(seconds=cs.sub.throttling))

    async def _terms(self, cs: CsourceSubscription, tenant: str) -> Terms:
        try:
            return await self.contexts.term_map(cs.sub.context, tenant=tenant)
        except NgsiLdError as exc:
            log.warning("subscription %s: @context unavailable (%s); using the core @context",
                        cs.id, exc.detail)
            return core_term_map()

    async def _outgoing(self, cs: CsourceSubscription, tenant: str,
                        registrations: list[JSONObject], now: str,
                        reason: str | None) -> Outgoing:
        terms = await self._terms(cs, tenant)
        body = notification_body(
            cs, notification_data(registrations, terms, now),
            notification_id=f"urn:ngsi-ld:Notification:{uuid.uuid4()}", notified_at=now,
            reason=reason)
        return Outgoing(tenant, cs.id, cs.sub.endpoint, body,
                        notification_headers(cs.sub, tenant))

    async def periodic_due(self, now: str) -> list[Outgoing]:
        """Notifications of the timeInterval subscriptions due at ``now``: every
        registration they select. The first one at creation (or, after a gap, one
        interval after the stored lastNotification), then every interval."""
        current = parse_datetime(now)
        if current is None:
            return []
        if self._periodic_at is None or current - self._periodic_at > PERIODIC_GAP:
            self._next_due.clear()
        self._periodic_at = current
        out: list[Outgoing] = []
        for stored in await self.store.load():
            doc = stored.doc
            if doc.get("timeInterval") is None:
                continue
            key = (stored.tenant, str(doc["id"]))
            interval = timedelta(seconds=float(doc["timeInterval"]))
            due = self._next_due.get(key)
            if due is None:
                last = parse_datetime(stored.stats.last_notification or "")
                due = format_datetime(last + interval) if last is not None else now
            due_at = parse_datetime(due)
            if due_at is not None and due_at > current:
                self._next_due[key] = due
                continue
            self._next_due[key] = format_datetime(current + interval)
            try:
                cs = compile_csource_subscription(doc)
                if not cs.sub.active_at(now):
                    continue
                found = matching(cs, await self.registrations.all(stored.tenant))
                if found:
                    out.append(await self._outgoing(cs, stored.tenant, found, now, None))
                    self._firing[key] = now
            except Exception:  # noqa: BLE001 - the others are still due
                log.exception("periodic notification of %s failed", key[1])
        return out

    # -- the delivery engine's side (``notifications.SubscriptionSource``) --------------

    async def match(self, change: object, only: str | None = None) -> Matched:
        """Entity changes notify entity subscriptions only."""
        return Matched([], {})

    def fired(self, outgoing: Iterable[Outgoing], *, recorded: bool) -> None:
        """Only a notification recorded for delivery counts for throttling."""
        for out in outgoing:
            key = (out.tenant, out.subscription_id)
            at = self._firing.pop(key, None)
            if recorded and at is not None:
                self._last_fired[key] = at

    async def delivered(self, tenant: str, subscription_id: str, *, ok: bool, at: str,
                        error: str | None = None) -> None:
        """Nothing to write: the outcome of every delivery is counted once, whatever the
        kind of its subscription, by the store's ``record_delivery``, which the entity
        subscription service (the engine's first source, ``SubscriptionSources``) calls.
        So a delivery of either kind costs one write, not one per kind."""
        return None

    async def get(self, tenant: str, subscription_id: str) -> JSONObject | None:
        """A subscription rendered with its own @context, None when unknown."""
        stored = await self.store.get(tenant, subscription_id)
        if stored is None:
            return None
        cs = compile_csource_subscription(stored.doc)
        return render_csource_subscription(stored.doc, await self._terms(cs, tenant),
                                           stored.stats, self.clock())


def _manages(guard: Guard, doc: JSONObject | None) -> bool:
    """Whether the caller may see and change the subscription ``doc`` (None: every one of
    the tenant): its owner, or an administrator of the tenant."""
    if guard.open:
        return True
    if doc is not None and doc.get(OWNER, {}).get("key") == guard.principal.key:
        return True
    return decide(guard.principal, Action.ADMIN, guard.tenant, None, guard.grants).allowed
