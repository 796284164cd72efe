"""Context source registration subscriptions end to end (clause 5.11.7): a real HTTP
receiver gets a CsourceNotification when a registration it selects is created, updated
or deleted, through the same outbox and senders as entity notifications.

The app runs in-process with its delivery workers, on every store (``store_url``).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.broker_process import Broker, free_port
from tests.integration.receiver import WAIT, Receiver
from urbanos.settings import Settings

CS = "csourceSubscriptions"
R = "csourceRegistrations"
CTX = {"Building": "https://data.example/Building", "Bus": "https://data.example/Bus",
       "name": "https://data.example/name"}
LD = "application/ld+json"


@pytest.fixture
def settings(store_url: str) -> Settings:
    return Settings(store=store_url, notify_backoff=0.1, notify_backoff_max=0.5,
                    notify_timeout=2.0, notify_max_attempts=3)


def csub(sid: str, uri: str, **more: Any) -> dict[str, Any]:
    return {"id": sid, "type": "Subscription", "entities": [{"type": "Building"}],
            "notification": {"endpoint": {"uri": uri, "accept": "application/json"}},
            **more}


def registration(rid: str, *types: str, **more: Any) -> dict[str, Any]:
    return {"id": rid, "type": "ContextSourceRegistration",
            "information": [{"entities": [{"type": t}]} for t in types or ("Building",)],
            "endpoint": "http://source.example:1026", **more}


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any],
               **headers: str) -> None:
    r = await client.post(path, json=body, headers=headers)
    assert r.status_code == 201, r.text


async def shown(client: httpx.AsyncClient, sid: str, until: str, value: Any,
                **headers: str) -> dict[str, Any]:
    """The subscription's notification member once ``until`` has ``value`` (or after 5 s)."""
    for _ in range(100):
        note: dict[str, Any] = (await client.get(f"{CS}/{sid}", headers=headers)
                                ).json()["notification"]
        if note.get(until) == value:
            break
        await asyncio.sleep(0.05)
    return note


async def test_created_updated_no_longer_matching_and_deleted(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    tenant = {"NGSILD-Tenant": "gent"}
    await post(client, CS, csub("urn:cs:1", f"{receiver.base}/n"), **tenant)
    await post(client, R, registration("urn:r:1", "Building", "Bus"), **tenant)
    [got] = await receiver.await_("/n")
    note = got.json()
    assert note["type"] == "ContextSourceNotification"
    assert note["subscriptionId"] == "urn:cs:1" and note["id"].startswith("urn:")
    assert note["triggerReason"] == "newlyMatching" and "notifiedAt" in note
    assert [d["id"] for d in note["data"]] == ["urn:r:1"]
    # only the RegistrationInfo that matched
    assert note["data"][0]["information"] == [{"entities": [{"type": ["Building"]}]}]
    assert got.headers["NGSILD-Tenant"] == "gent"
    assert got.headers["Content-Type"] == "application/json" and "Link" in got.headers

    r = await client.patch(f"{R}/urn:r:1", json={"endpoint": "http://other.example:1026"},
                           headers=tenant)
    assert r.status_code == 204
    got = (await receiver.await_("/n", 2))[1].json()
    assert got["triggerReason"] == "updated"
    assert got["data"][0]["endpoint"] == "http://other.example:1026"

    r = await client.patch(f"{R}/urn:r:1", json={"information": [{"entities": [
        {"type": "Bus"}]}]}, headers=tenant)
    assert r.status_code == 204
    got = (await receiver.await_("/n", 3))[2].json()
    assert got["triggerReason"] == "noLongerMatching" and got["data"][0]["id"] == "urn:r:1"

    await post(client, R, registration("urn:r:2"), **tenant)
    assert (await receiver.await_("/n", 4))[3].json()["triggerReason"] == "newlyMatching"
    assert (await client.delete(f"{R}/urn:r:2", headers=tenant)).status_code == 204
    got = (await receiver.await_("/n", 5))[4].json()
    assert got["triggerReason"] == "noLongerMatching" and got["data"][0]["id"] == "urn:r:2"
    # a registration of another type, or of another tenant, notifies nobody
    await post(client, R, registration("urn:r:3", "Bus"), **tenant)
    await post(client, R, registration("urn:r:4"))
    await asyncio.sleep(0.5)
    assert len(receiver.on("/n")) == 5

    note = await shown(client, "urn:cs:1", "timesSent", 5, **tenant)
    assert note["timesSent"] == 5 and note["status"] == "ok"
    assert "lastSuccess" in note and "lastNotification" in note and "timesFailed" not in note


async def test_a_new_or_updated_subscription_gets_what_it_selects_now(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await post(client, R, registration("urn:r:b", "Building"))
    await post(client, R, registration("urn:r:v", "Bus"))
    await post(client, CS, csub("urn:cs:2", f"{receiver.base}/init"))
    [got] = await receiver.await_("/init")
    assert [d["id"] for d in got.json()["data"]] == ["urn:r:b"]
    assert got.json()["triggerReason"] == "newlyMatching"
    r = await client.patch(f"{CS}/urn:cs:2", json={"entities": [{"type": "Building"},
                                                                {"type": "Bus"}]})
    assert r.status_code == 204
    got = (await receiver.await_("/init", 2))[1].json()
    assert sorted(d["id"] for d in got["data"]) == ["urn:r:b", "urn:r:v"]
    assert got["triggerReason"] == "newlyMatching"


async def test_names_compacted_with_the_subscribers_context_and_ld_json(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    body = csub("urn:cs:ld", f"{receiver.base}/ld", watchedAttributes=["name"])
    body["notification"]["endpoint"]["accept"] = LD
    await post(client, CS, {**body, "@context": CTX}, **{"Content-Type": LD})
    reg = registration("urn:r:ld")
    reg["information"][0]["propertyNames"] = ["name"]
    await post(client, R, {**reg, "@context": CTX}, **{"Content-Type": LD})
    [got] = await receiver.await_("/ld")
    note = got.json()
    assert got.headers["Content-Type"] == LD and "@context" in note
    assert note["data"][0]["information"] == [{"entities": [{"type": ["Building"]}],
                                               "propertyNames": ["name"]}]


async def test_paused_expired_and_unwatched_send_nothing(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await post(client, CS, csub("urn:cs:p", f"{receiver.base}/paused", isActive=False))
    await post(client, CS, csub("urn:cs:w", f"{receiver.base}/watch",
                                watchedAttributes=["name"]))
    await post(client, CS, csub("urn:cs:e", f"{receiver.base}/expired",
                                expiresAt="2099-01-01T00:00:00Z"))
    r = await client.patch(f"{CS}/urn:cs:e", json={"expiresAt": "2020-08-01T22:07:00Z"})
    assert r.status_code == 400  # an expiry in the past is refused...
    await post(client, R, registration("urn:r:p"))  # every attribute: watched ones too
    await receiver.await_("/watch")
    reg = registration("urn:r:q")
    reg["information"][0]["propertyNames"] = ["height"]
    await post(client, R, reg)
    await asyncio.sleep(0.5)
    assert receiver.on("/paused") == []
    assert len(receiver.on("/watch")) == 1
    assert len(receiver.on("/expired")) == 2  # ...so it is still active


async def test_failures_are_retried_then_counted(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await post(client, CS, csub("urn:cs:flaky", f"{receiver.base}/flaky/1/x"))
    await post(client, CS, csub("urn:cs:fail", f"{receiver.base}/fail"))
    await post(client, R, registration("urn:r:f"))
    await receiver.await_("/flaky", 2)
    await receiver.await_("/fail", 3)
    ok = await shown(client, "urn:cs:flaky", "status", "ok")
    assert ok["timesSent"] == 2 and ok["timesFailed"] == 1 and "lastSuccess" in ok
    failed = await shown(client, "urn:cs:fail", "timesFailed", 3)
    assert failed["status"] == "failed" and failed["timesSent"] == 3
    assert "lastFailure" in failed
    # abandoned after notify_max_attempts: a delivery dead letter, as for entity ones
    assert len(receiver.on("/fail")) == 3


async def test_time_interval_and_throttling(
    client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await post(client, R, registration("urn:r:t"))
    await post(client, CS, csub("urn:cs:every", f"{receiver.base}/every", timeInterval=1))
    await post(client, CS, csub("urn:cs:slow", f"{receiver.base}/slow-down", throttling=60))
    got = await receiver.await_("/every", 2, timeout=WAIT)
    assert len(got) >= 2 and all("triggerReason" not in g.json() for g in got)
    assert [d["id"] for d in got[0].json()["data"]] == ["urn:r:t"]
    await receiver.await_("/slow-down")  # the initial notification
    await post(client, R, registration("urn:r:t2"))
    await asyncio.sleep(0.5)
    assert len(receiver.on("/slow-down")) == 1


def test_a_killed_broker_delivers_after_restart(tmp_path: Path) -> None:
    """The notification of a registration is in the outbox once the registration was
    answered 201: a broker killed with SIGKILL before delivering it delivers it after a
    restart (a real process on a SQLite file; the receiver is down at first)."""
    env = {**os.environ, "URBANOS_NOTIFY_BACKOFF": "0.5", "URBANOS_NOTIFY_BACKOFF_MAX": "1",
           "URBANOS_NOTIFY_TIMEOUT": "3", "URBANOS_NOTIFY_MAX_ATTEMPTS": "1000"}
    broker = Broker(f"sqlite:///{tmp_path}/broker.db", tmp_path / "broker.log", env=env)
    port = free_port()
    try:
        broker.start()
        r = broker.call("POST", CS, csub("urn:cs:d", f"http://127.0.0.1:{port}/n"))
        assert r.status_code == 201, r.text
        assert broker.call("POST", R, registration("urn:r:d")).status_code == 201
        deadline = time.monotonic() + 10
        while broker.call("GET", f"{CS}/urn:cs:d").json()["notification"].get(
                "timesFailed", 0) == 0:
            assert time.monotonic() < deadline, "the broker never tried"
            time.sleep(0.05)
        broker.kill()
        with Receiver(port) as receiver:
            broker.start()
            got = receiver.wait("/n", 1, timeout=15)
            assert got, "the notification was lost"
            assert got[0].json()["data"][0]["id"] == "urn:r:d"
            assert got[0].json()["triggerReason"] == "newlyMatching"
    finally:
        broker.stop()
        broker.client.close()
