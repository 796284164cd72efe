"""Context source registrations in the SQLite file of the entity store (its ``Database``).

One row per registration: the document as JSON, and the counters of forwarded requests in
their own columns, so counting a request never rewrites (or races with) the document.
``seq`` keeps creation order for paging. Bound parameters only.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from urbanos.errors import AlreadyExists
from urbanos.storage.registrations import RegistrationUse, with_use, without_use
from urbanos.storage.sqlite.database import Database
from urbanos.types import JSONObject

__all__ = ["SCHEMA", "SqliteRegistrationStore"]

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS registrations (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant TEXT NOT NULL,
        id TEXT NOT NULL,
        doc TEXT NOT NULL,
        times_sent INTEGER NOT NULL DEFAULT 0,
        times_failed INTEGER NOT NULL DEFAULT 0,
        last_success TEXT,
        last_failure TEXT,
        status TEXT,
        UNIQUE (tenant, id)
    )""",
]
_SELECT = ("SELECT doc, times_sent, times_failed, last_success, last_failure, status"
           " FROM registrations WHERE tenant = ?")


#: adds counted requests to a registration's counters (``RegistrationUse.plus`` in SQL)
_ADD_USE = (
    "UPDATE registrations SET times_sent = times_sent + ?, times_failed = times_failed + ?,"
    " last_success = COALESCE(?, last_success), last_failure = COALESCE(?, last_failure),"
    " status = COALESCE(?, status) WHERE tenant = ? AND id = ?"
)

def _row(row: tuple[Any, ...]) -> JSONObject:
    doc, sent, failed, success, failure, status = row
    use = RegistrationUse(int(sent), int(failed), success, failure, status)
    return with_use(orjson.loads(doc), use)


def _dump(doc: JSONObject) -> str:
    return orjson.dumps(without_use(doc)).decode()


class SqliteRegistrationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self) -> None:
        """Create the table; the Database itself is opened by the entity store."""

        def migrate(conn: sqlite3.Connection) -> None:
            for stmt in SCHEMA:
                conn.execute(stmt)

        await self.db.transact(migrate)

    async def close(self) -> None:
        return None

    async def insert(self, tenant: str, doc: JSONObject) -> None:
        def run(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO registrations (tenant, id, doc) VALUES (?, ?, ?)",
                    (tenant, doc["id"], _dump(doc)),
                )
            except sqlite3.IntegrityError as exc:
                raise AlreadyExists(f"registration {doc['id']} already exists") from exc

        await self.db.transact(run)

    async def replace(self, tenant: str, doc: JSONObject) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE registrations SET doc = ? WHERE tenant = ? AND id = ?",
                (_dump(doc), tenant, doc["id"]),
            )
            return cur.rowcount > 0

        return await self.db.transact(run)

    async def delete(self, tenant: str, registration_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM registrations WHERE tenant = ? AND id = ?", (tenant, registration_id)
            )
            return cur.rowcount > 0

        return await self.db.transact(run)

    async def get(self, tenant: str, registration_id: str) -> JSONObject | None:
        def run(conn: sqlite3.Connection) -> JSONObject | None:
            row = conn.execute(_SELECT + " AND id = ?", (tenant, registration_id)).fetchone()
            return _row(row) if row else None

        return await self.db.read(run)

    async def all(self, tenant: str) -> list[JSONObject]:
        def run(conn: sqlite3.Connection) -> list[JSONObject]:
            rows = conn.execute(_SELECT + " ORDER BY seq", (tenant,)).fetchall()
            return [_row(r) for r in rows]

        return await self.db.read(run)

    async def page(self, tenant: str, limit: int, offset: int) -> tuple[list[JSONObject], int]:
        def run(conn: sqlite3.Connection) -> tuple[list[JSONObject], int]:
            rows = conn.execute(
                _SELECT + " ORDER BY seq LIMIT ? OFFSET ?", (tenant, limit, offset)
            ).fetchall()
            total = conn.execute(
                "SELECT COUNT(*) FROM registrations WHERE tenant = ?", (tenant,)
            ).fetchone()[0]
            return [_row(r) for r in rows], int(total)

        return await self.db.read(run)

    async def record_use(self, tenant: str, registration_id: str, use: RegistrationUse) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(_ADD_USE, (use.times_sent, use.times_failed, use.last_success,
                                    use.last_failure, use.status, tenant, registration_id))

        await self.db.transact(run)
