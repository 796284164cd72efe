"""Notifications carry only what the subscription's owner may read, when it is matched, and
stop when the right is revoked: end to end, with a real HTTP receiver, on every store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.http.access_harness import Broker, LocalIssuer, broker, local_issuer, secured_settings
from tests.integration.receiver import Receiver
from urbanos.core.policy import OPEN, Action, Assignee, Grant, Role, Target

DEF = "https://uri.etsi.org/ngsi-ld/default-context/"
E = "/ngsi-ld/v1/entities"
AT = "2026-12-01T09:00:00.000Z"


def gauge(n: int, level: float, code: str) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:RiverGauge:{n}", "type": "RiverGauge",
            "level": {"type": "Property", "value": level, "observedAt": AT},
            "maintenanceCode": {"type": "Property", "value": code}}


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with local_issuer() as it:
        yield it


@pytest.fixture
async def city(store_url: str, issuer: LocalIssuer) -> AsyncIterator[Broker]:
    settings = secured_settings(store_url, issuer, notify_backoff=0.1,
                                notify_backoff_max=0.5, notify_timeout=2.0)
    async with broker(settings) as b:
        yield b


async def test_notifications_show_only_what_the_owner_may_read(
    city: Broker, issuer: LocalIssuer, receiver: Receiver
) -> None:
    access = city.services.access
    alert_service = Grant(
        "urn:ngsi-ld:Permission:alerts", "", Assignee.parse("claim:groups=river"),
        frozenset({Action.READ, Action.SUBSCRIBE}),
        Target(types=(DEF + "RiverGauge",), hidden=(DEF + "maintenanceCode",)))
    await access.add_grant(OPEN, alert_service)
    _, writer = await access.create_key(OPEN, "", Role.WRITER, "gauges")
    sub = {"type": "Subscription", "entities": [{"type": "RiverGauge"}, {"type": "Bridge"}],
           "notification": {"endpoint": {"uri": f"{receiver.base}/alerts",
                                         "accept": "application/json"}}}
    token = issuer.token("alert-service", groups=["river"])
    async with city.client(token=token) as service:
        r = await service.post("/ngsi-ld/v1/subscriptions", json=sub)
        assert r.status_code == 201, r.text
    _, admin = await access.create_key(OPEN, "", Role.TENANT_ADMIN, "operator")
    watcher = {"type": "Subscription", "entities": [{"type": "RiverGauge"}],
               "notification": {"endpoint": {"uri": f"{receiver.base}/all",
                                             "accept": "application/json"}}}
    async with city.client(key=admin) as operator:  # sees every change: a clock for the test
        assert (await operator.post("/ngsi-ld/v1/subscriptions", json=watcher)).status_code == 201
    async with city.client(key=writer) as w:
        bridge = {"id": "urn:ngsi-ld:Bridge:1", "type": "Bridge",
                  "lamp": {"type": "Property", "value": "green"}}
        assert (await w.post(E, json=bridge)).status_code == 201
        assert (await w.post(E, json=gauge(1, 2.5, "K-17"))).status_code == 201
        [got] = await receiver.await_("/alerts")
        [shown] = got.json()["data"]
        assert shown["id"] == "urn:ngsi-ld:RiverGauge:1"  # not the bridge it may not see
        assert shown["level"]["value"] == 2.5
        assert "maintenanceCode" not in shown
        # a change only to what the owner may not see notifies nothing
        r = await w.patch(E + "/urn:ngsi-ld:RiverGauge:1/attrs",
                          json={"maintenanceCode": {"type": "Property", "value": "K-18"}})
        assert r.status_code == 204
        # revoked: the next change is matched as a stranger's, and not sent
        await access.delete_grant(OPEN, "", alert_service.id)
        r = await w.patch(E + "/urn:ngsi-ld:RiverGauge:1/attrs",
                          json={"level": {"type": "Property", "value": 3.9, "observedAt": AT}})
        assert r.status_code == 204
        await receiver.await_("/all", count=3)  # the change has been matched for both
        # a later change the owner may see again proves the pipeline still runs
        await access.add_grant(OPEN, alert_service)
        r = await w.patch(E + "/urn:ngsi-ld:RiverGauge:1/attrs",
                          json={"level": {"type": "Property", "value": 4.2, "observedAt": AT}})
        assert r.status_code == 204
        got = await receiver.await_("/alerts", count=2)
    levels = [g.json()["data"][0]["level"]["value"] for g in got]
    assert levels == [2.5, 4.2]
    assert len(receiver.on("/alerts")) == 2


async def test_a_revoked_key_stops_the_notifications_of_its_subscriptions(
    city: Broker, receiver: Receiver
) -> None:
    access = city.services.access
    stored, app_key = await access.create_key(OPEN, "", Role.SUBSCRIBER, "dashboard")
    _, admin = await access.create_key(OPEN, "", Role.TENANT_ADMIN, "operator")
    _, writer = await access.create_key(OPEN, "", Role.WRITER, "gauges")

    def subscription(path: str) -> dict[str, Any]:
        return {"type": "Subscription", "entities": [{"type": "RiverGauge"}],
                "notification": {"endpoint": {"uri": f"{receiver.base}{path}",
                                              "accept": "application/json"}}}

    async with city.client(key=app_key) as dashboard:
        assert (await dashboard.post("/ngsi-ld/v1/subscriptions",
                                     json=subscription("/dash"))).status_code == 201
    async with city.client(key=admin) as operator:
        assert (await operator.post("/ngsi-ld/v1/subscriptions",
                                    json=subscription("/all"))).status_code == 201
    async with city.client(key=writer) as w:
        assert (await w.post(E, json=gauge(1, 1.0, "A"))).status_code == 201
        await receiver.await_("/dash")
        await access.revoke_key(OPEN, stored.id)
        assert (await w.post(E, json=gauge(2, 2.0, "B"))).status_code == 201
        await receiver.await_("/all", count=2)  # matched for every subscription by now
    assert len(receiver.on("/dash")) == 1
