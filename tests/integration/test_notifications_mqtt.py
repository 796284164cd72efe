"""Notifications over MQTT to the real Mosquitto on 127.0.0.1:1883 (``make test`` starts it).

Subscriptions go through the API; a test client subscribes to the topic with aiomqtt and
reads what the broker published: ``{"metadata": {...}, "body": Notification}``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import httpx
import pytest

from tests.conftest import MQTT_HOST, MQTT_PORT
from urbanos.settings import Settings

pytestmark = pytest.mark.usefixtures("mosquitto")


@pytest.fixture
def settings(store_url: str) -> Settings:
    return Settings(store=store_url, notify_backoff=0.1, notify_backoff_max=0.3,
                    notify_timeout=2.0, notify_max_attempts=2)


@pytest.fixture
def topic() -> str:
    return f"urbanos-test/{uuid.uuid4().hex}"


@pytest.fixture
async def listener(topic: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as client:
        await client.subscribe(topic, qos=1)
        yield client


async def next_message(client: aiomqtt.Client, timeout: float = 5.0) -> aiomqtt.Message:
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            return message
    raise AssertionError("no message")


def subscription(sid: str, uri: str, notifier: list[dict[str, str]] | None = None,
                 **endpoint: Any) -> dict[str, Any]:
    ep: dict[str, Any] = {"uri": uri, "accept": "application/json", **endpoint}
    if notifier:
        ep["notifierInfo"] = notifier
    return {"id": sid, "type": "Subscription", "entities": [{"type": "Lamp"}],
            "notification": {"endpoint": ep}}


LAMP = {"id": "urn:ngsi-ld:Lamp:1", "type": "Lamp", "level": {"type": "Property", "value": 3.5}}


@pytest.mark.parametrize("version", ["mqtt5.0", "mqtt3.1.1"])
async def test_published_with_metadata_and_body(
    client: httpx.AsyncClient, listener: aiomqtt.Client, topic: str, version: str
) -> None:
    body = subscription(
        "urn:s:mqtt", f"mqtt://{MQTT_HOST}:{MQTT_PORT}/{topic}",
        [{"key": "MQTT-QoS", "value": "1"}, {"key": "MQTT-Version", "value": version}],
        receiverInfo=[{"key": "X-City", "value": "Gent"}],
    )
    assert (await client.post("subscriptions", json=body)).status_code == 201
    assert (await client.post("entities", json=LAMP)).status_code == 201
    message = await next_message(listener)
    assert message.qos == 1  # published with QoS 1: acknowledged before it counts as sent
    payload = json.loads(message.payload)  # type: ignore[arg-type]
    assert set(payload) == {"metadata", "body"}
    assert payload["metadata"]["Content-Type"] == "application/json"
    assert 'rel="http://www.w3.org/ns/json-ld#context"' in payload["metadata"]["Link"]
    assert payload["metadata"]["X-City"] == "Gent"
    note = payload["body"]
    assert note["type"] == "Notification" and note["subscriptionId"] == "urn:s:mqtt"
    assert note["data"][0]["level"]["value"] == 3.5
    for _ in range(50):
        shown = (await client.get("subscriptions/urn:s:mqtt")).json()["notification"]
        if shown.get("timesSent"):
            break
        await asyncio.sleep(0.05)
    assert shown["timesSent"] == 1 and shown["status"] == "ok"


async def test_default_qos_is_zero(
    client: httpx.AsyncClient, listener: aiomqtt.Client, topic: str
) -> None:
    body = subscription("urn:s:q0", f"mqtt://{MQTT_HOST}/{topic}")
    assert (await client.post("subscriptions", json=body)).status_code == 201
    assert (await client.post("entities", json=LAMP)).status_code == 201
    message = await next_message(listener)
    assert message.qos == 0
    assert json.loads(message.payload)["body"]["subscriptionId"] == "urn:s:q0"  # type: ignore[arg-type]


async def test_an_unreachable_mqtt_broker_is_a_failure(client: httpx.AsyncClient) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    body = subscription("urn:s:down", f"mqtt://127.0.0.1:{port}/t",
                        [{"key": "MQTT-QoS", "value": "1"}])
    assert (await client.post("subscriptions", json=body)).status_code == 201
    assert (await client.post("entities", json=LAMP)).status_code == 201
    for _ in range(100):
        shown = (await client.get("subscriptions/urn:s:down")).json()["notification"]
        if shown.get("timesFailed"):
            break
        await asyncio.sleep(0.05)
    assert shown["status"] == "failed" and shown["timesFailed"] >= 1
