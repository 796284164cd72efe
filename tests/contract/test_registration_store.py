"""What every RegistrationStore does: ids per tenant, creation order, documents and the
counters of forwarded requests kept apart, durability, and (PostgreSQL) one table shared by
every node, each change announced to the cluster."""

from __future__ import annotations

import orjson
import psycopg
import pytest

from tests.contract.conftest import Backend
from urbanos.errors import AlreadyExists
from urbanos.storage.postgres.listen import REGISTRATIONS_CHANNEL, node_for
from urbanos.storage.postgres.registrations import PostgresRegistrationStore
from urbanos.storage.registrations import USE_MEMBERS, RegistrationUse
from urbanos.types import JSONObject

T1 = "2024-01-01T00:00:01.000Z"
T2 = "2024-01-01T00:00:02.000Z"
T3 = "2024-01-01T00:00:03.000Z"


def rid(n: int) -> str:
    return f"urn:ngsi-ld:ContextSourceRegistration:{n}"


def reg(n: int, **extra: object) -> JSONObject:
    return {
        "id": rid(n), "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "https://uri.etsi.org/ngsi-ld/default-context/"
                                               "WaterLevelObserved"}]}],
        "endpoint": "http://university.example:1026", "mode": "inclusive",
        "contextSourceInfo": [{"key": "Authorization", "value": "Bearer x"}], **extra,
    }



def used(*, ok: bool, at: str) -> RegistrationUse:
    """What one forwarded request adds to the counters."""
    return RegistrationUse().after(ok=ok, at=at)

async def test_insert_then_get_returns_the_document(backend: Backend) -> None:
    store = (await backend.open()).registrations
    given = reg(1, management={"timeout": 500})
    await store.insert("", given)
    found = await store.get("", rid(1))
    assert found == reg(1, management={"timeout": 500})
    assert not set(USE_MEMBERS) & set(found)  # no request forwarded yet: no counters
    assert await store.get("", rid(2)) is None


async def test_documents_are_not_shared_with_callers(backend: Backend) -> None:
    store = (await backend.open()).registrations
    given = reg(1)
    await store.insert("", given)
    given["mode"] = "exclusive"
    got = await store.get("", rid(1))
    assert got is not None
    got["information"].clear()
    assert await store.get("", rid(1)) == reg(1)


async def test_duplicate_id_in_one_tenant_is_refused_and_changes_nothing(
    backend: Backend,
) -> None:
    store = (await backend.open()).registrations
    await store.insert("", reg(1))
    with pytest.raises(AlreadyExists):
        await store.insert("", reg(1, mode="exclusive"))
    assert await store.get("", rid(1)) == reg(1)
    assert [d["id"] for d in await store.all("")] == [rid(1)]


async def test_tenants_are_separate(backend: Backend) -> None:
    store = (await backend.open()).registrations
    await store.insert("sendai", reg(1))
    await store.insert("tohoku", reg(1, mode="auxiliary"))  # the same id elsewhere is fine
    assert await store.get("", rid(1)) is None
    tohoku = await store.get("tohoku", rid(1))
    assert tohoku is not None and tohoku["mode"] == "auxiliary"
    assert await store.delete("sendai", rid(1))
    assert await store.get("tohoku", rid(1)) == reg(1, mode="auxiliary")
    assert not await store.replace("sendai", reg(1, mode="redirect"))
    await store.record_use("sendai", rid(1), used(ok=True, at=T1))
    assert await store.all("sendai") == []
    assert await store.page("tohoku", 10, 0) == ([reg(1, mode="auxiliary")], 1)


async def test_replace_only_an_existing_registration(backend: Backend) -> None:
    store = (await backend.open()).registrations
    assert not await store.replace("", reg(1))
    assert await store.get("", rid(1)) is None  # replace never creates
    for n in (1, 2):
        await store.insert("", reg(n))
    assert await store.replace("", reg(1, mode="exclusive", expiresAt="2030-01-01T00:00:00Z"))
    assert await store.get("", rid(1)) == reg(1, mode="exclusive",
                                               expiresAt="2030-01-01T00:00:00Z")
    # a replaced registration keeps its place in creation order
    assert [d["id"] for d in await store.all("")] == [rid(1), rid(2)]


async def test_delete(backend: Backend) -> None:
    store = (await backend.open()).registrations
    assert not await store.delete("", rid(1))
    await store.insert("", reg(1))
    await store.insert("", reg(2))
    assert await store.delete("", rid(1))
    assert not await store.delete("", rid(1))
    assert await store.get("", rid(1)) is None
    assert await store.all("") == [reg(2)]
    await store.insert("", reg(1))  # the id is free again, and now the newest
    assert [d["id"] for d in await store.all("")] == [rid(2), rid(1)]


async def test_all_and_page_keep_creation_order_and_count(backend: Backend) -> None:
    store = (await backend.open()).registrations
    assert await store.all("") == []
    assert await store.page("", 10, 0) == ([], 0)
    for n in (3, 1, 4, 2):
        await store.insert("", reg(n))
    await store.insert("other", reg(9))
    assert [d["id"] for d in await store.all("")] == [rid(3), rid(1), rid(4), rid(2)]
    page, total = await store.page("", 2, 1)
    assert total == 4
    assert [d["id"] for d in page] == [rid(1), rid(4)]
    assert await store.page("", 2, 3) == ([reg(2)], 4)
    assert await store.page("", 5, 10) == ([], 4)


async def test_record_use_counts_and_keeps_last_times(backend: Backend) -> None:
    store = (await backend.open()).registrations
    await store.insert("", reg(1))
    await store.insert("", reg(2))
    await store.record_use("", rid(1), used(ok=True, at=T1))
    after_ok = await store.get("", rid(1))
    assert after_ok == reg(1, timesSent=1, timesFailed=0, lastSuccess=T1, status="ok")
    await store.record_use("", rid(1), used(ok=False, at=T2))
    await store.record_use("", rid(1), used(ok=False, at=T3))
    expected = reg(1, timesSent=3, timesFailed=2, lastSuccess=T1, lastFailure=T3,
                   status="failed")
    assert await store.get("", rid(1)) == expected
    await store.record_use("", rid(1), used(ok=True, at=T3))
    assert (await store.get("", rid(1)) or {})["status"] == "ok"
    # the members come with every read, and only on the registration that was used
    listed = await store.all("")
    assert listed[0]["timesSent"] == 4 and listed[1] == reg(2)
    page, _ = await store.page("", 1, 0)
    assert page[0]["timesFailed"] == 2 and page[0]["lastFailure"] == T3


async def test_record_use_adds_what_several_requests_counted(backend: Backend) -> None:
    """One call may carry many requests (a node's counts since its last flush): counts
    are summed, the last times and the status are the latest given."""
    store = (await backend.open()).registrations
    await store.insert("", reg(1))
    await store.record_use("", rid(1), used(ok=False, at=T1).after(ok=True, at=T2))
    two_nodes = used(ok=True, at=T3).after(ok=True, at=T3).after(ok=False, at=T3)
    await store.record_use("", rid(1), two_nodes)
    assert await store.get("", rid(1)) == reg(
        1, timesSent=5, timesFailed=2, lastSuccess=T3, lastFailure=T3, status="failed")
    await store.record_use("", rid(1), RegistrationUse())  # nothing counted: nothing changes
    assert (await store.get("", rid(1)) or {})["timesSent"] == 5


async def test_record_use_of_an_unknown_registration_does_nothing(backend: Backend) -> None:
    store = (await backend.open()).registrations
    await store.record_use("", rid(1), used(ok=False, at=T1))
    assert await store.get("", rid(1)) is None
    await store.insert("", reg(1))
    assert await store.get("", rid(1)) == reg(1)  # no counters carried over


async def test_replace_keeps_counters_that_only_record_use_sets(backend: Backend) -> None:
    """An update of the registration must not reset (or forge) the counters."""
    store = (await backend.open()).registrations
    await store.insert("", reg(1, timesSent=99, status="ok"))
    assert await store.get("", rid(1)) == reg(1)
    await store.record_use("", rid(1), used(ok=False, at=T1))
    stale = reg(1, mode="exclusive", timesSent=0, timesFailed=0, lastFailure=T2)
    assert await store.replace("", stale)
    assert await store.get("", rid(1)) == reg(1, mode="exclusive", timesSent=1, timesFailed=1,
                                               lastFailure=T1, status="failed")


async def test_registrations_survive_a_restart(durable: Backend) -> None:
    first = await durable.open()
    await first.registrations.insert("sendai", reg(1))
    await first.registrations.insert("sendai", reg(2, mode="redirect"))
    await first.registrations.record_use("sendai", rid(2), used(ok=False, at=T1))
    await durable.close(first)
    again = (await durable.open()).registrations
    assert await again.all("sendai") == [
        reg(1), reg(2, mode="redirect", timesSent=1, timesFailed=1, lastFailure=T1,
                    status="failed"),
    ]
    await again.insert("sendai", reg(3))  # creation order goes on after the restart
    assert [d["id"] for d in await again.all("sendai")] == [rid(1), rid(2), rid(3)]


async def test_every_node_of_a_database_sees_the_same_registrations(pg: Backend) -> None:
    one, two = (await pg.open()).registrations, (await pg.open()).registrations
    await one.insert("yokoze", reg(1))
    assert await two.get("yokoze", rid(1)) == reg(1)
    with pytest.raises(AlreadyExists):
        await two.insert("yokoze", reg(1))
    await two.record_use("yokoze", rid(1), used(ok=True, at=T1))
    assert await one.all("yokoze") == [reg(1, timesSent=1, timesFailed=0, lastSuccess=T1,
                                            status="ok")]
    assert await two.delete("yokoze", rid(1))
    assert await one.get("yokoze", rid(1)) is None


async def test_changes_are_announced_to_the_cluster_once_committed(pg: Backend) -> None:
    """Each insert, replace and delete that changed something announces its tenant and its
    writer; refused or empty writes and counting a request announce nothing."""
    stores = await pg.open()
    store = stores.registrations
    assert isinstance(store, PostgresRegistrationStore)
    node_id = node_for(stores.entities).node_id  # type: ignore[arg-type]
    async with await psycopg.AsyncConnection.connect(pg.url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {REGISTRATIONS_CHANNEL}")
        await store.insert("a", reg(1))
        with pytest.raises(AlreadyExists):
            await store.insert("a", reg(1))  # rolled back: nothing to announce
        await store.replace("b", reg(1))  # absent: nothing changed
        await store.replace("a", reg(1, mode="exclusive"))
        await store.record_use("a", rid(1), used(ok=True, at=T1))
        await store.delete("c", rid(1))  # absent
        await store.insert("c", reg(1))
        await store.delete("a", rid(1))
        await listener.execute(f"NOTIFY {REGISTRATIONS_CHANNEL}, 'end'")
        seen: list[tuple[int, str]] = []
        async for n in listener.notifies(timeout=10):
            if n.payload == "end":
                break
            payload = orjson.loads(n.payload)
            seen.append((payload["node"], payload["tenant"]))
    assert seen == [(node_id, "a"), (node_id, "a"), (node_id, "c"), (node_id, "a")]
