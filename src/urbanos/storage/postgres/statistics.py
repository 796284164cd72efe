"""Planner statistics of a tenant's entity tables, refreshed after bulk writes.

Autovacuum analyzes a table once a tenth of it has changed, but on its own schedule (a
minute or more, later on a busy server). Until then the planner takes a freshly loaded value
index for empty and drives queries from their broadest filter: type + q over 100,000
entities just loaded took 830 ms instead of 5 ms. So each node counts the entity rows it
writes per schema and, past a fifth of what the last analysis saw (at least 1,000), runs
ANALYZE on those tables in the background, one at a time per schema.
"""

from __future__ import annotations

import asyncio
import logging

from psycopg import sql

from urbanos.storage.postgres.database import Database

log = logging.getLogger("urbanos.store")

TABLES = ("entities", "attr_values", "geo_values")


class Statistics:
    def __init__(self, db: Database, *, least: int = 1000) -> None:
        self.db = db
        self.least = least
        self._written: dict[str, int] = {}
        self._seen: dict[str, int] = {}  # rows the last analysis counted
        self._running: dict[str, asyncio.Task[None]] = {}

    def wrote(self, schema: str, rows: int) -> None:
        """Count committed entity writes; start an analysis when enough have piled up."""
        written = self._written.get(schema, 0) + rows
        self._written[schema] = written
        if schema in self._running or written < max(self.least, self._seen.get(schema, 0) // 5):
            return
        self._written[schema] = 0
        task = asyncio.get_running_loop().create_task(self._analyze(schema))
        self._running[schema] = task
        task.add_done_callback(lambda _: self._running.pop(schema, None))

    async def _analyze(self, schema: str) -> None:
        tables = sql.SQL(", ").join(sql.Identifier(schema, t) for t in TABLES)
        try:
            async with self.db.connection() as conn:
                await conn.execute(sql.SQL("ANALYZE {}").format(tables))
                cur = await conn.execute(
                    "SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
                    (sql.Identifier(schema, "entities").as_string(conn),),
                )
                row = await cur.fetchone()
                self._seen[schema] = int(max(row[0], 0)) if row else 0
        except Exception:  # noqa: BLE001 - statistics are an optimisation: writes go on
            log.warning("ANALYZE of schema %s failed", schema, exc_info=True)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
