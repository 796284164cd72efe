"""A server that ends sessions under the pool (a restart, a crash, an operator): reads are run
once more on a fresh connection, writes are not, and an unreachable database is a 503-class
error, never a psycopg one reaching the HTTP layer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import AsyncConnection

from tests.conftest import PG_ADMIN
from urbanos.errors import ServiceUnavailable
from urbanos.storage.postgres.database import Database, DatabaseUnavailable, is_unavailable

KILL_SELF = "SELECT pg_terminate_backend(pg_backend_pid())"


@pytest.fixture
async def db(postgres_database: str) -> AsyncIterator[Database]:
    d = Database(postgres_database, max_size=2)
    await d.open()
    yield d
    await d.close()


async def _pid(conn: AsyncConnection) -> int:
    row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_read_cut_off_by_the_server_runs_again_on_a_fresh_connection(db: Database) -> None:
    pids: list[int] = []

    async def work(conn: AsyncConnection) -> int:
        pids.append(await _pid(conn))
        if len(pids) == 1:
            await conn.execute(KILL_SELF)  # the server ends this session mid-read
        return 42

    assert await db.read(work) == 42
    assert len(pids) == 2 and pids[0] != pids[1]


async def test_a_read_cut_off_twice_is_unavailable(db: Database) -> None:
    calls = 0

    async def work(conn: AsyncConnection) -> None:
        nonlocal calls
        calls += 1
        await conn.execute(KILL_SELF)

    with pytest.raises(DatabaseUnavailable) as caught:
        await db.read(work)
    assert calls == 2
    assert isinstance(caught.value, ServiceUnavailable) and caught.value.status == 503


async def test_a_write_cut_off_is_unavailable_and_not_run_again(db: Database) -> None:
    async with db.connection() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS public.cut_off (n int)")
        await conn.execute("TRUNCATE public.cut_off")
    runs = 0
    with pytest.raises(DatabaseUnavailable):
        async with db.transaction() as conn:
            runs += 1
            await conn.execute("INSERT INTO public.cut_off VALUES (1)")
            await conn.execute(KILL_SELF)
    assert runs == 1
    async with db.connection() as conn:  # the pool hands out a live connection again
        row = await (await conn.execute("SELECT count(*) FROM public.cut_off")).fetchone()
        await conn.execute("DROP TABLE public.cut_off")
    assert row == (0,)


async def test_pooled_connections_the_server_ended_are_never_handed_out(db: Database) -> None:
    async with db.connection() as first, db.connection() as second:
        pids = {await _pid(first), await _pid(second)}
    async with await AsyncConnection.connect(PG_ADMIN.rsplit("/", 1)[0] + "/postgres",
                                             autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(p) FROM unnest(%s::int[]) AS p",
                            (list(pids),))
        # pg_terminate_backend only signals: wait until the server has ended them
        for _ in range(600):
            cur = await admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s::int[])", (list(pids),))
            row = await cur.fetchone()
            if row is not None and row[0] == 0:
                break
            await asyncio.sleep(0.05)
    for _ in range(4):  # plain connections: no read retry behind them
        async with db.connection() as conn:
            assert await _pid(conn) not in pids


async def test_statement_errors_are_not_outages(db: Database) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero) as caught:
        async with db.connection() as conn:
            await conn.execute("SELECT 1 / 0")
    assert not is_unavailable(caught.value)
    with pytest.raises(psycopg.errors.QueryCanceled) as cancelled:
        async with db.connection() as conn:
            await conn.execute("SET statement_timeout = 10")
            await conn.execute("SELECT pg_sleep(1)")
    assert not is_unavailable(cancelled.value)


async def test_an_unreachable_server_is_unavailable(unused_tcp_port: int) -> None:
    d = Database(f"postgresql://postgres@127.0.0.1:{unused_tcp_port}/x")
    await d._pool.open(wait=False)
    try:
        with pytest.raises(DatabaseUnavailable):
            async with d.connection(timeout=0.5):
                pass
    finally:
        await d.close()
