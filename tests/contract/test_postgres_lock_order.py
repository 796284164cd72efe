"""PostgreSQL writes lock entity ids in one global order, so two writers never deadlock:
a plan that writes an id it did not ask for does not wait for that id's lock while it
holds one that sorts after it."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from tests.conftest import postgres_enabled
from tests.contract.test_postgres_store import pg_url, store  # noqa: F401 - fixtures
from urbanos.storage.base import Write
from urbanos.storage.postgres import DEFAULT_SCHEMA, PostgresStore, _lock_keys
from urbanos.types import JSONObject

pytestmark = pytest.mark.skipif(not postgres_enabled(), reason="needs PostgreSQL")

WAIT = 20.0  # an upper bound for what happens at once: never reached when the code is right


def key(eid: str) -> int:
    return _lock_keys(DEFAULT_SCHEMA, [eid])[0]


def ordered_pair() -> tuple[str, str]:
    """Two ids, the second of which locks first."""
    first = "urn:e:0"
    for n in range(1, 100):
        other = f"urn:e:{n}"
        if key(other) < key(first):
            return first, other
    raise AssertionError("no id sorts before urn:e:0")


def doc(eid: str) -> JSONObject:
    return {"id": eid, "type": ["https://ex.org/T"], "attrs": {}}


async def waiting_for(conn: psycopg.AsyncConnection, lock: int) -> bool:
    cur = await conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND classid = %s::bigint::oid AND objid = %s::bigint::oid"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        ((lock >> 32) & 0xFFFFFFFF, lock & 0xFFFFFFFF),
    )
    row = await cur.fetchone()
    return row is not None and row[0] > 0


async def test_a_plan_writing_an_id_it_did_not_ask_for_waits_holding_nothing_after_it(
    store: PostgresStore, pg_url: str,  # noqa: F811 - the fixtures
) -> None:
    asked, extra = ordered_pair()  # extra's lock sorts before asked's

    def plan(current: dict[str, JSONObject]) -> tuple[list[Write], None]:
        return [Write("put", asked, doc(asked)), Write("put", extra, doc(extra))], None

    async with await psycopg.AsyncConnection.connect(pg_url) as holder, \
            await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as probe:
        await holder.execute("SELECT pg_advisory_xact_lock(%s)", (key(extra),))
        writing = asyncio.create_task(store.modify("", [asked], plan))
        async with asyncio.timeout(WAIT):
            while not await waiting_for(probe, key(extra)):
                await asyncio.sleep(0.01)
        # the writer waits for extra: it must not hold asked, which sorts after it
        cur = await probe.execute("SELECT pg_try_advisory_lock(%s)", (key(asked),))
        row = await cur.fetchone()
        assert row is not None and row[0] is True
        await probe.execute("SELECT pg_advisory_unlock(%s)", (key(asked),))
        await holder.commit()
        await asyncio.wait_for(writing, WAIT)
    assert set(await store.get_many("", [asked, extra])) == {asked, extra}
