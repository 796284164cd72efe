"""The temporal service on the memory store: mirroring into the current state, retention."""

from __future__ import annotations

import pytest

from urbanos.core.temporal import parse_temporal_query
from urbanos.services.temporal import Retention, TemporalService
from urbanos.storage.memory import MemoryStore
from urbanos.storage.memory_temporal import MemoryTemporalStore
from urbanos.storage.temporal import HistoryRequest

X = "https://ex.org/"
T = ""


def obs(value: object, day: int) -> dict[str, object]:
    at = f"2024-05-{day:02d}T00:00:00Z"
    return {"type": "Property", "value": value, "observedAt": at, "createdAt": at,
            "modifiedAt": at}


def service(now: str = "2024-05-20T00:00:00.000Z", retention: str = "") -> TemporalService:
    store = MemoryStore()
    return TemporalService(store, MemoryTemporalStore(store), instance_limit=100,
                           retention=Retention.parse(retention), clock=lambda: now)


def test_retention_text() -> None:
    assert Retention.parse("") == Retention()
    policy = Retention.parse("30, cityA=7,cityB=0")
    assert (policy.days("cityA"), policy.days("cityB"), policy.days("other")) == (7, 0, 30)
    assert policy.active and not Retention.parse("0").active
    for bad in ("thirty", "a=-1", "-3"):
        with pytest.raises(ValueError):
            Retention.parse(bad)


async def test_upsert_mirrors_the_latest_instance_and_retention_expires() -> None:
    svc = service(retention="10")
    created = await svc.upsert(T, {"id": "urn:e:1", "type": [X + "V"],
                                   "attrs": {X + "speed": [obs(1, 1), obs(3, 15), obs(2, 5)]}})
    assert created
    current = await svc.store.get(T, "urn:e:1")
    assert current is not None and current["attrs"][X + "speed"][0]["value"] == 3
    again = await svc.upsert(T, {"id": "urn:e:1", "type": [X + "V"],
                                 "attrs": {X + "speed": [obs(0, 2)]}})
    assert not again
    current = await svc.store.get(T, "urn:e:1")
    assert current is not None and current["attrs"][X + "speed"][0]["value"] == 3
    assert await svc.expire() == 3  # days 1, 2 and 5 are older than ten days
    request = HistoryRequest(query=parse_temporal_query(), limit=100)
    (speed,) = (await svc.retrieve(T, "urn:e:1", request)).series
    assert [i["value"] for i in speed.instances] == [3]
