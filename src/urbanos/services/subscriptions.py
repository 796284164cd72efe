"""Subscriptions (clauses 5.8.1 - 5.8.6): their lifecycle, and which ones a change fires.

The delivery side (outbox, workers, senders) asks ``notifications_for(change)`` for every
entity change and ``periodic_due(now)`` on a timer, sends what it gets, and reports back
with ``delivered``. Matching goes through an in-memory index per tenant, loaded from the
store on first use and kept current by this service's own writes: candidates by entity id,
entity type and watched attribute (plus the few that can only be tested one by one), then
the trigger and the q/geoQ/scopeQ trees evaluated on the entity in Python. So the cost of
a change grows with the subscriptions that could match it, not with all of them.

On several nodes another node's writes make an index stale: ``invalidate(tenant)`` drops
it, and it is reloaded on next use. Loading follows the one rule of every cache
(``services.cluster``): a change made here or elsewhere while an index was being read bumps
the tenant's generation, and the index read is then not kept.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit

from urbanos.core.change import Change
from urbanos.core.jsonld import core_term_map
from urbanos.core.notification import (
    entity_for_change,
    notification_body,
    notification_headers,
    render_data,
    render_options,
)
from urbanos.core.policy import ANONYMOUS, Action, Grant, Principal, decide
from urbanos.core.render import relationship_targets
from urbanos.core.selection import linked_steps, required_types
from urbanos.core.subscription import (
    AttributeChanges,
    DeliveryStats,
    Outgoing,
    Subscription,
    attribute_changes,
    compile_subscription,
    matches,
    trigger_reason,
)
from urbanos.core.subscription_payload import (
    parse_subscription,
    patch_subscription,
    render_subscription,
)
from urbanos.core.timeutil import format_datetime, now_iso, parse_datetime
from urbanos.errors import BadRequestData, NgsiLdError, ResourceNotFound
from urbanos.outbound import OutboundPolicy, check_url
from urbanos.services.cluster import Generations
from urbanos.services.contexts import ContextService
from urbanos.services.guard import (
    OPEN_GUARD,
    Guard,
    principal_from_record,
    principal_record,
)
from urbanos.services.linked import fetch_linked
from urbanos.services.notifications import Matched
from urbanos.settings import Settings
from urbanos.storage.base import EntityStore
from urbanos.storage.subscriptions import StoredSubscription, SubscriptionStore
from urbanos.types import JSON, JSONObject, Terms

__all__ = ["SubscriptionService", "own_origins"]

log = logging.getLogger("urbanos.subscriptions")
ENDPOINT_SCHEMES = frozenset({"http", "https", "mqtt", "mqtts"})
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0", "::"})
Key = tuple[str, str]


class FederatedHook(Protocol):
    """What distributed subscriptions are told (``FederatedSubscriptions``)."""

    async def created(self, tenant: str, doc: JSONObject) -> None: ...

    async def updated(self, tenant: str, doc: JSONObject) -> None: ...

    async def deleted(self, tenant: str, subscription_id: str) -> None: ...

#: a longer pause between two ``periodic_due`` calls means another node may have fired
PERIODIC_GAP = timedelta(seconds=5)


@dataclass
class _TenantIndex:
    """Candidate subscriptions of one tenant by entity id, type and watched attribute."""

    subs: dict[str, Subscription] = field(default_factory=dict)
    by_id: dict[str, set[str]] = field(default_factory=dict)
    by_type: dict[str, set[str]] = field(default_factory=dict)
    by_attr: dict[str, set[str]] = field(default_factory=dict)
    catch_all: set[str] = field(default_factory=set)
    periodic: set[str] = field(default_factory=set)
    _keys: dict[str, list[tuple[dict[str, set[str]] | None, str]]] = field(default_factory=dict)

    def add(self, sub: Subscription) -> None:
        self.remove(sub.id)
        self.subs[sub.id] = sub
        keys: list[tuple[dict[str, set[str]] | None, str]] = []
        if sub.time_interval is not None:
            self.periodic.add(sub.id)
        elif sub.query.selectors:
            for sel in sub.query.selectors:
                if sel.ids:
                    keys.extend((self.by_id, i) for i in sel.ids)
                    continue
                names = required_types(sel.types) if sel.types is not None else None
                if names is None:
                    keys.append((None, ""))
                    break
                keys.extend((self.by_type, n) for n in names)
        elif sub.watched:
            keys.extend((self.by_attr, a) for a in sub.watched)
        else:
            keys.append((None, ""))
        for table, key in keys:
            if table is None:
                self.catch_all.add(sub.id)
            else:
                table.setdefault(key, set()).add(sub.id)
        self._keys[sub.id] = keys

    def remove(self, sub_id: str) -> None:
        self.subs.pop(sub_id, None)
        self.periodic.discard(sub_id)
        self.catch_all.discard(sub_id)
        for table, key in self._keys.pop(sub_id, []):
            if table is not None and key in table:
                table[key].discard(sub_id)
                if not table[key]:
                    del table[key]

    def candidates(
        self, entity_id: str, types: Iterable[str], attrs: Iterable[str]
    ) -> list[Subscription]:
        found = set(self.catch_all)
        found |= self.by_id.get(entity_id, set())
        for t in types:
            found |= self.by_type.get(t, set())
        for a in attrs:
            found |= self.by_attr.get(a, set())
        return [self.subs[i] for i in sorted(found) if i in self.subs]


class SubscriptionService:
    def __init__(
        self,
        store: SubscriptionStore,
        contexts: ContextService,
        clock: Callable[[], str] = now_iso,
        *,
        entities: EntityStore | None = None,
        policy: OutboundPolicy | None = None,
        own_origins: Iterable[tuple[str, int]] = (),
        periodic_limit: int = 1000,
    ) -> None:
        """``entities`` resolves linked q terms, ``join`` and periodic notifications;
        ``own_origins`` are the (host, port) pairs the broker itself answers on."""
        self.store = store
        self.contexts = contexts
        self.clock = clock
        self.entities = entities
        self.policy = policy if policy is not None else contexts.policy
        self.own_origins = {(h.lower().strip("[]"), p) for h, p in own_origins}
        self.periodic_limit = periodic_limit
        #: set by the delivery engine (``NotificationEngine.settled``): a read of a
        #: subscription first lets the outcomes of its sends in progress be recorded
        self.outcomes: Callable[[str, str], Awaitable[None]] | None = None
        #: the tenants' grants, for what each subscription's owner may read (None: no
        #: access control, notifications carry everything)
        self.grants: Callable[[str], Awaitable[Sequence[Grant]]] | None = None
        #: an owner as it stands now (``AccessService.current``): None stops its
        #: subscriptions' notifications (a revoked API key)
        self.owners: Callable[[Principal], Awaitable[Principal | None]] | None = None
        #: told of each subscription created and deleted once stored (the distributed
        #: subscriptions of ``services.federated_subscriptions``)
        self.federated: FederatedHook | None = None
        self._indexes: dict[str, _TenantIndex] = {}
        self._generations = Generations()  # see services.cluster
        self._tenants: set[str] = set()
        self._last_fired: dict[Key, str] = {}
        self._last_failure: dict[Key, str] = {}
        self._next_due: dict[Key, str] = {}
        self._periodic_at: datetime | None = None  # the last periodic_due call
        #: throttling: notifications matched, not yet recorded for delivery (``fired``
        #: moves them to ``_last_fired``, the last ones recorded)
        self._firing: dict[Key, str] = {}

    # -- the index ---------------------------------------------------------------------

    async def open(self) -> None:
        """(Re)load every subscription into the indexes: at start, once the changes of other
        nodes are heard, and when some may have been missed. An index whose tenant changed
        (here or elsewhere) during the load is not kept: it is read again on next use."""
        self._generations.bump(None)
        self._indexes.clear()
        token = self._generations.token()
        loaded: dict[str, _TenantIndex] = {}
        for stored in await self.store.load():
            self._tenants.add(stored.tenant)
            loaded.setdefault(stored.tenant, _TenantIndex()).add(self._compile(stored))
        for tenant, index in loaded.items():
            if self._generations.fresh(token, tenant):
                self._indexes.setdefault(tenant, index)

    def invalidate(self, tenant: str | None) -> None:
        """Forget a tenant's index (None: every index): another node changed its
        subscriptions. Each is reloaded on next use."""
        self._generations.bump(tenant)
        if tenant is None:
            self._indexes.clear()
        else:
            self._indexes.pop(tenant, None)

    def _wrote(self, tenant: str) -> _TenantIndex | None:
        """This node changed a subscription of ``tenant`` in the store: an index being read
        meanwhile may miss it. Returns the loaded index, for the caller to update."""
        self._generations.bump(tenant)
        return self._indexes.get(tenant)

    async def _index(self, tenant: str) -> _TenantIndex:
        index = self._indexes.get(tenant)
        if index is None:
            token = self._generations.token()
            index = _TenantIndex()
            for stored in await self.store.load(tenant):
                index.add(self._compile(stored))
            if self._generations.fresh(token, tenant):
                # else a change during the load means the rows may be stale: use them
                # for this call only and load again next time
                self._indexes[tenant] = index
            if index.subs:
                self._tenants.add(tenant)
        return index

    @staticmethod
    def _compile(stored: StoredSubscription) -> Subscription:
        return compile_subscription(stored.doc)

    # -- the API operations ------------------------------------------------------------

    def _check_endpoint(self, doc: JSONObject) -> None:
        check_endpoint(doc["notification"]["endpoint"]["uri"], self.policy, self.own_origins)

    async def _resolve_context(self, doc: JSONObject, context: JSON, tenant: str) -> None:
        """Fetch the @contexts the subscription will need (504 if unavailable), and set
        jsonldContext: the subscriber's, or the URL of the request's @context."""
        default = await self.contexts.link_url(context, tenant=tenant)
        doc["_context"] = context
        doc["_defaultContext"] = default
        if doc.get("_explicitContext"):
            await self.contexts.term_map(doc["jsonldContext"], tenant=tenant)
        else:
            doc["jsonldContext"] = default

    async def create(self, tenant: str, payload: JSON, terms: Terms, context: JSON, *,
                     guard: Guard = OPEN_GUARD) -> str:
        """Create Subscription (5.8.1); returns the id (generated when absent). The caller
        owns it: only it (and the tenant's admins) see and change it, and its
        notifications carry only what the owner may read."""
        guard.require_some(Action.SUBSCRIBE)
        now = self.clock()
        doc = parse_subscription(
            payload, terms, now, new_id=lambda: f"urn:ngsi-ld:Subscription:{uuid.uuid4()}"
        )
        if not guard.open:
            doc[OWNER] = principal_record(guard.principal)
        self._check_endpoint(doc)
        await self._resolve_context(doc, context, tenant)
        sub = compile_subscription(doc)
        await self.store.insert(tenant, doc)
        index = self._wrote(tenant)
        if index is not None:
            index.add(sub)
        self._tenants.add(tenant)
        await guard.record_ok([str(doc["id"])])
        if self.federated is not None:
            try:
                await self.federated.created(tenant, doc)
            except Exception:  # noqa: BLE001 - the subscription stands; its copies do not
                log.exception("distributing subscription %s failed", doc["id"])
        return str(doc["id"])

    async def update(
        self, tenant: str, subscription_id: str, fragment: JSON, terms: Terms, context: JSON,
        *, guard: Guard = OPEN_GUARD,
    ) -> None:
        """Update Subscription (5.8.2)."""
        stored = await self._stored(tenant, subscription_id, guard)
        doc = patch_subscription(stored.doc, fragment, terms, self.clock())
        self._check_endpoint(doc)
        if isinstance(fragment, dict) and fragment.get("jsonldContext"):
            await self.contexts.term_map(doc["jsonldContext"], tenant=tenant)
        sub = compile_subscription(doc)
        if not await self.store.replace(tenant, doc):
            raise ResourceNotFound(f"subscription {subscription_id} not found")
        index = self._wrote(tenant)
        if index is not None:
            index.add(sub)
        self._next_due.pop((tenant, subscription_id), None)
        await guard.record_ok([subscription_id])
        if self.federated is not None:
            try:
                await self.federated.updated(tenant, doc)
            except Exception:  # noqa: BLE001 - the update stands; its copies may lag
                log.exception("updating the copies of subscription %s failed",
                              subscription_id)

    async def delete(self, tenant: str, subscription_id: str, *,
                     guard: Guard = OPEN_GUARD) -> None:
        """Delete Subscription (5.8.5)."""
        if not guard.open:
            await self._stored(tenant, subscription_id, guard)
        if not await self.store.delete(tenant, subscription_id):
            raise ResourceNotFound(f"subscription {subscription_id} not found")
        index = self._wrote(tenant)
        if index is not None:
            index.remove(subscription_id)
        for table in (self._last_fired, self._firing, self._last_failure, self._next_due):
            table.pop((tenant, subscription_id), None)
        await guard.record_ok([subscription_id])
        if self.federated is not None:
            try:
                await self.federated.deleted(tenant, subscription_id)
            except Exception:  # noqa: BLE001 - the subscription is gone here regardless
                log.exception("deleting the copies of subscription %s failed",
                              subscription_id)

    async def _stored(self, tenant: str, subscription_id: str,
                      guard: Guard = OPEN_GUARD) -> StoredSubscription:
        """The subscription; 404 also when it is not the caller's to see."""
        stored = await self.store.get(tenant, subscription_id)
        if stored is None or not _manages(guard, stored.doc):
            raise ResourceNotFound(f"subscription {subscription_id} not found")
        return stored

    async def retrieve(self, tenant: str, subscription_id: str, terms: Terms, *,
                       guard: Guard = OPEN_GUARD) -> JSONObject:
        """Retrieve Subscription (5.8.3), names compacted with the caller's @context."""
        if not guard.open:
            await self._stored(tenant, subscription_id, guard)
        if self.outcomes is not None:
            await self.outcomes(tenant, subscription_id)
        stored = await self._stored(tenant, subscription_id)
        return render_subscription(stored.doc, terms, stored.stats, self.clock())

    async def query(
        self, tenant: str, terms: Terms, *, limit: int, offset: int,
        guard: Guard = OPEN_GUARD,
    ) -> tuple[list[JSONObject], int]:
        """Query Subscriptions (5.8.4): one page in creation order and the total, of the
        subscriptions the caller owns (all of them for admins and without access
        control)."""
        now = self.clock()
        if guard.open or _manages(guard, None):
            rows, total = await self.store.page(tenant, limit, offset)
        else:
            mine = [r for r in await self._all(tenant) if _manages(guard, r.doc)]
            rows, total = mine[offset:offset + limit], len(mine)
        return [render_subscription(r.doc, terms, r.stats, now) for r in rows], total

    async def _all(self, tenant: str, chunk: int = 1000) -> list[StoredSubscription]:
        out: list[StoredSubscription] = []
        while True:
            rows, _ = await self.store.page(tenant, chunk, len(out))
            out.extend(rows)
            if len(rows) < chunk:
                return out

    async def get(self, tenant: str, subscription_id: str) -> JSONObject | None:
        """A subscription rendered with its own @context, None when unknown."""
        stored = await self.store.get(tenant, subscription_id)
        if stored is None:
            return None
        terms = await self._terms(compile_subscription(stored.doc), tenant)
        return render_subscription(stored.doc, terms, stored.stats, self.clock())

    # -- notifications -----------------------------------------------------------------

    async def notifications_for(self, change: Change) -> list[Outgoing]:
        """The notifications one entity change fires (clause 5.8.6), ready to send; the
        subscriptions whose matching failed are left out (``match`` names them)."""
        return (await self.match(change)).outgoing

    async def match(self, change: Change, only: str | None = None) -> Matched:
        """``notifications_for``, each subscription on its own: one whose matching raises
        is named in ``failed`` and the others are matched all the same. ``only``: this
        subscription alone (a retry of its failure)."""
        index = await self._index(change.tenant)
        if not index.subs:
            return Matched([], {})
        changes = attribute_changes(change)
        types: set[str] = set()
        for state in (change.before, change.after):
            if state is not None:
                types.update(state.get("type", ()))
        now = self.clock()
        out: list[Outgoing] = []
        failed: dict[str, str] = {}
        for sub in index.candidates(change.entity_id, types, changes.names):
            if only is not None and sub.id != only:
                continue
            try:
                outgoing = await self._match_one(sub, change, changes, now)
            except Exception as exc:  # noqa: BLE001 - isolated: the others still match
                log.exception("matching change %s of %s against %s failed",
                              change.seq, change.entity_id, sub.id)
                failed[sub.id] = f"{type(exc).__name__}: {exc}"
                continue
            if outgoing is not None:
                out.append(outgoing)
        return Matched(out, failed)

    async def owner_view(self, sub: Subscription, tenant: str) -> Guard | None:
        """What the subscription's owner may read now (None: everything); for entities
        notified from elsewhere (distributed subscriptions)."""
        return await self._owner_guard(sub, tenant)

    async def _owner_guard(self, sub: Subscription, tenant: str) -> Guard | None:
        """The rights of the subscription's owner now (None: it sees everything; a guard
        that sees nothing when the owner is gone)."""
        record = sub.doc.get(OWNER)
        if record is None or self.grants is None:
            return None
        owner: Principal | None = principal_from_record(record)
        if self.owners is not None and owner is not None:
            owner = await self.owners(owner)
        guard = Guard(owner or ANONYMOUS, tenant, await self.grants(tenant) if owner else ())
        return None if guard.view.unrestricted else guard

    async def _match_one(
        self, sub: Subscription, change: Change, changes: AttributeChanges, now: str
    ) -> Outgoing | None:
        owner = await self._owner_guard(sub, change.tenant)
        if owner is not None:  # matched and shown as the owner may see it, now
            before = owner.read(change.before) if change.before is not None else None
            after = owner.read(change.after) if change.after is not None else None
            if before is None and after is None:
                return None
            change = replace(change, before=before, after=after)
            changes = attribute_changes(change)
        state = change.after if change.after is not None else change.before
        assert state is not None
        resolver = None
        if sub.linked_depth:  # fetch linked entities only for a change that can fire
            if sub.time_interval is not None or not sub.active_at(now):
                return None
            if trigger_reason(sub, change, changes) is None:
                return None
            resolver = await self._resolver(sub, change.tenant, state)
        reason = matches(sub, change, now, changes=changes, linked=resolver)
        if reason is None:
            return None
        key = (change.tenant, sub.id)
        if await self._held_back(sub, change.tenant, now):
            return None
        # no await since the check: concurrent matches cannot both pass the throttle
        previous = self._firing.get(key)
        self._firing[key] = now
        try:
            return await self._outgoing(sub, change, reason, changes, now, owner)
        except BaseException:
            if previous is None:
                self._firing.pop(key, None)
            else:
                self._firing[key] = previous
            raise

    def fired(self, outgoing: Iterable[Outgoing], *, recorded: bool) -> None:
        """The delivery side recorded ``outgoing`` (or failed to): only a notification
        recorded for delivery counts for throttling, so a failed attempt does not hold
        back its own retry."""
        for out in outgoing:
            key = (out.tenant, out.subscription_id)
            at = self._firing.pop(key, None)
            if recorded and at is not None:
                self._last_fired[key] = at

    async def _resolver(
        self, sub: Subscription, tenant: str, entity: JSONObject
    ) -> Callable[[str], JSONObject | None] | None:
        """For a q with linked entity terms: the entities it reaches, fetched up front."""
        if sub.query.q is None or self.entities is None:
            return None
        return (await self._linked_for_q(sub, tenant, entity)).get

    async def _linked_for_q(
        self, sub: Subscription, tenant: str, entity: JSONObject
    ) -> dict[str, JSONObject]:
        assert sub.query.q is not None and self.entities is not None
        found: dict[str, JSONObject] = {}
        level = [entity]
        for names in linked_steps(sub.query.q):
            targets: list[str] = []
            for e in level:
                for name in names:
                    for inst in e.get("attrs", {}).get(name, ()):
                        targets.extend(relationship_targets(inst))
            wanted = [t for t in dict.fromkeys(targets) if t not in found]
            if not wanted:
                break
            fetched = await self.entities.get_many(tenant, wanted)
            found.update(fetched)
            level = list(fetched.values())
        return found

    async def _held_back(self, sub: Subscription, tenant: str, now: str) -> bool:
        """Throttling (no two notifications closer than ``throttling`` seconds) and the
        endpoint's cooldown after a failure. The last notification is the last one being
        recorded (``_firing``), else the last one recorded (``fired``), else the stored
        lastNotification."""
        key = (tenant, sub.id)
        current = parse_datetime(now)
        if current is None:
            return False
        stored_last = None
        if sub.throttling and key not in self._last_fired and key not in self._firing:
            stored = await self.store.get(tenant, sub.id)
            stored_last = stored.stats.last_notification if stored else None
        if sub.throttling:
            last = self._firing.get(key) or self._last_fired.get(key, stored_last)
            at = parse_datetime(last) if last else None
            if at is not None and current < at + timedelta(seconds=sub.throttling):
                return True
        cooldown = sub.endpoint.cooldown_ms
        failed = self._last_failure.get(key)
        if cooldown and failed:
            at = parse_datetime(failed)
            if at is not None and current < at + timedelta(milliseconds=cooldown):
                return True
        return False

    async def _terms(self, sub: Subscription, tenant: str) -> Terms:
        """The subscription's @context processed; the core one if it cannot be had now."""
        try:
            return await self.contexts.term_map(sub.context, tenant=tenant)
        except NgsiLdError as exc:
            log.warning("subscription %s: @context unavailable (%s); using the core @context",
                        sub.id, exc.detail)
            return core_term_map()

    async def _outgoing(
        self, sub: Subscription, change: Change, reason: str, changes: AttributeChanges,
        now: str, owner: Guard | None = None,
    ) -> Outgoing:
        terms = await self._terms(sub, change.tenant)
        entity = entity_for_change(sub, change, reason, changes, terms)
        linked: dict[str, JSONObject] = {}
        if sub.join and change.after is not None and self.entities is not None:
            linked = await fetch_linked(self.entities, change.tenant, [entity],
                                        render_options(sub), owner.read if owner else None)
        data = render_data(sub, [entity], terms, linked, deleted=change.after is None)
        return self._package(sub, change.tenant, data, now, reason)

    def package(self, sub: Subscription, tenant: str, data: JSON, now: str,
                reason: str | None) -> Outgoing:
        """One notification of ``sub`` carrying ``data``: its body and headers, built the
        same way for every notification (also those of distributed subscriptions)."""
        return self._package(sub, tenant, data, now, reason)

    def _package(self, sub: Subscription, tenant: str, data: JSON, now: str,
                 reason: str | None) -> Outgoing:
        body = notification_body(
            sub, data, notification_id=f"urn:ngsi-ld:Notification:{uuid.uuid4()}",
            notified_at=now, trigger=reason,
        )
        return Outgoing(tenant, sub.id, sub.endpoint, body, notification_headers(sub, tenant))

    async def periodic_due(self, now: str) -> list[Outgoing]:
        """Notifications of the timeInterval subscriptions due at ``now``: every entity
        they select, whether or not it changed; the first one interval after creation
        or after the last notification sent.

        Called every second by the one node that leads periodic notifications. After a
        gap (this node just took over from a dead leader, or it was stopped) the schedule
        in memory is stale: each subscription starts again from its stored
        lastNotification, which whichever node sent it recorded, so a takeover neither
        fires at once nor skips a beat."""
        current = parse_datetime(now)
        if current is None or self.entities is None:
            return []
        if self._periodic_at is None or current - self._periodic_at > PERIODIC_GAP:
            self._next_due.clear()
        self._periodic_at = current
        out: list[Outgoing] = []
        # tenants invalidated by another node may have subscriptions this one never loaded
        tenants = self._tenants | set(self._indexes) | self._generations.tenants()
        for tenant in sorted(tenants):
            index = await self._index(tenant)
            for sub_id in sorted(index.periodic):
                sub = index.subs[sub_id]
                key = (tenant, sub_id)
                interval = timedelta(seconds=float(sub.time_interval or 0))
                due = self._next_due.get(key)
                if due is None:
                    start = await self._last_periodic(tenant, sub) or current
                    due = format_datetime(start + interval)
                    self._next_due[key] = due
                due_at = parse_datetime(due)
                if due_at is not None and due_at > current:
                    continue
                self._next_due[key] = format_datetime(current + interval)
                if not sub.active_at(now):
                    continue
                outgoing = await self._periodic(sub, tenant, now)
                if outgoing is not None:
                    out.append(outgoing)
                    self._firing[key] = now
        return out

    async def _last_periodic(self, tenant: str, sub: Subscription) -> datetime | None:
        """When the subscription last notified (any node), else when it was created."""
        stored = await self.store.get(tenant, sub.id)
        last = stored.stats.last_notification if stored is not None else None
        return parse_datetime(last or sub.created_at)

    async def _periodic(self, sub: Subscription, tenant: str, now: str) -> Outgoing | None:
        assert self.entities is not None
        query = replace(sub.query, limit=self.periodic_limit, offset=0, count=False)
        owner = await self._owner_guard(sub, tenant)
        if owner is not None:
            query = owner.query(query)
        page = await self.entities.query(tenant, query)
        if not page.entities:
            return None
        terms = await self._terms(sub, tenant)
        opts = render_options(sub)
        linked = await fetch_linked(self.entities, tenant, page.entities, opts,
                                    owner.read if owner else None)
        data = render_data(sub, page.entities, terms, linked)
        return self._package(sub, tenant, data, now, None)

    async def delivered(
        self, tenant: str, subscription_id: str, *, ok: bool, at: str, error: str | None = None
    ) -> None:
        """Count one delivery attempt: timesSent, timesFailed, lastNotification,
        lastSuccess/lastFailure and the notification status (clause 5.2.14)."""
        await self.store.record_delivery(tenant, subscription_id, ok=ok, at=at, error=error)
        key = (tenant, subscription_id)
        if ok:
            self._last_failure.pop(key, None)
        else:
            self._last_failure[key] = at

    async def stats(self, tenant: str, subscription_id: str) -> DeliveryStats | None:
        stored = await self.store.get(tenant, subscription_id)
        return stored.stats if stored else None


def own_origins(settings: Settings) -> list[tuple[str, int]]:
    """Where the broker answers: the listening host and port and the public URL."""
    out = [(settings.host, settings.port)]
    public = urlsplit(settings.base_url)
    if public.hostname:
        default = 443 if public.scheme == "https" else 80
        out.append((public.hostname, public.port or default))
    return out


def check_endpoint(uri: str, policy: OutboundPolicy,
                   own_origins: Iterable[tuple[str, int]] = (),
                   schemes: frozenset[str] | None = None) -> None:
    """A URL the broker will send to: the outbound policy, and never the broker itself (a
    loop). For notification endpoints and context sources alike."""
    check_url(uri, policy, schemes=schemes if schemes is not None else ENDPOINT_SCHEMES)
    parts = urlsplit(uri)
    host = (parts.hostname or "").lower()
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower(), 0)
    for own_host, own_port in own_origins:
        same_host = host == own_host or (
            host in _LOOPBACK_NAMES and own_host in _LOOPBACK_NAMES)
        if same_host and port == own_port:
            raise BadRequestData(f"the endpoint {uri} is this broker")


#: where a subscription keeps its owner (members starting with _ are never rendered)
OWNER = "_owner"


def _manages(guard: Guard, doc: JSONObject | None) -> bool:
    """Whether the caller may see and change the subscription ``doc`` (None: every
    subscription of the tenant): its owner, or an administrator of the tenant."""
    if guard.open:
        return True
    if doc is not None and doc.get(OWNER, {}).get("key") == guard.principal.key:
        return True
    return decide(guard.principal, Action.ADMIN, guard.tenant, None, guard.grants).allowed
