"""A small stand-in for SubscriptionService (the delivery side's view of it).

Every subscription of a tenant matches every change; bodies are minimal Notifications.
It records what the engine reports, so tests can check timesSent/timesFailed-like counts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from urbanos.core.change import Change
from urbanos.core.subscription import Endpoint, Outgoing
from urbanos.core.timeutil import now_iso
from urbanos.services.notifications import Matched

CTX = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"


@dataclass
class Report:
    tenant: str
    subscription_id: str
    ok: bool
    error: str | None


@dataclass
class FakeSubscriptions:
    subs: dict[tuple[str, str], Endpoint] = field(default_factory=dict)
    reports: list[Report] = field(default_factory=list)
    periodic: list[tuple[str, str]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add(self, sid: str, uri: str, *, tenant: str = "", **endpoint: Any) -> None:
        self.subs[(tenant, sid)] = Endpoint(uri, **endpoint)

    def outgoing(self, tenant: str, sid: str, data: list[dict[str, Any]]) -> Outgoing:
        endpoint = self.subs[(tenant, sid)]
        body = {
            "id": f"urn:ngsi-ld:Notification:{next(self._ids)}",
            "type": "Notification",
            "subscriptionId": sid,
            "notifiedAt": now_iso(),
            "data": data,
        }
        headers = {"Content-Type": endpoint.accept}
        if endpoint.accept == "application/json":
            headers["Link"] = f'<{CTX}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
        if tenant:
            headers["NGSILD-Tenant"] = tenant
        headers.update(dict(endpoint.receiver_info))
        return Outgoing(tenant, sid, endpoint, body, headers)

    async def match(self, change: Change, only: str | None = None) -> Matched:
        data = [change.after or {"id": change.entity_id, "deleted": True}]
        return Matched([
            self.outgoing(tenant, sid, data)
            for (tenant, sid) in list(self.subs)
            if tenant == change.tenant and only in (None, sid)
        ], {})

    def fired(self, outgoing: list[Outgoing], *, recorded: bool) -> None:
        return None

    async def periodic_due(self, now: str) -> list[Outgoing]:
        due, self.periodic = self.periodic, []
        return [self.outgoing(t, s, [{"id": "urn:periodic", "at": now}]) for t, s in due]

    async def delivered(
        self, tenant: str, subscription_id: str, *, ok: bool, at: str, error: str | None = None
    ) -> None:
        self.reports.append(Report(tenant, subscription_id, ok, error))

    async def get(self, tenant: str, subscription_id: str) -> dict[str, Any] | None:
        return {"id": subscription_id} if (tenant, subscription_id) in self.subs else None

    def of(self, sid: str) -> list[bool]:
        return [r.ok for r in self.reports if r.subscription_id == sid]
