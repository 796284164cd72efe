"""Interned names: the IRIs of types, attributes and attribute kinds as small integers.

Every index row names an attribute and a type; as full IRIs those are ~50 bytes each,
repeated in each row of the table and again in every index over it. As integers the index
tables are about a sixth of the size, so a write dirties fewer pages and a query reads
fewer. Reads resolve names inside SQL (``ID`` / ``ids_in``), so they need no cache and see
exactly what is committed; the writer thread keeps a cache of the ids it has used.
"""

from __future__ import annotations

import sqlite3

SCHEMA = ["CREATE TABLE IF NOT EXISTS names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)"]

#: the id of the name bound to its one parameter; NULL (matching nothing) if it was never used
ID = "(SELECT id FROM names WHERE name = ?)"


def ids_in(count: int) -> str:
    """The ids of ``count`` bound names, for ``column IN ...``."""
    return f"(SELECT id FROM names WHERE name IN ({','.join('?' * count)}))"


class Names:
    """The writer's name -> id cache.

    An id learnt inside a transaction that is then rolled back may not exist afterwards,
    so ids learnt since the last commit are forgotten on rollback (``Database`` calls
    ``committed`` and ``rolled_back``). Only the writer thread uses it.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._fresh: list[str] = []

    def id(self, conn: sqlite3.Connection, name: str) -> int:
        known = self._ids.get(name)
        if known is not None:
            return known
        row = conn.execute("SELECT id FROM names WHERE name = ?", (name,)).fetchone()
        if row is not None:
            found: int = row[0]
        else:
            rowid = conn.execute("INSERT INTO names (name) VALUES (?)", (name,)).lastrowid
            assert rowid is not None
            found = rowid
        self._ids[name] = found
        self._fresh.append(name)
        return found

    def committed(self) -> None:
        self._fresh.clear()

    def rolled_back(self) -> None:
        for name in self._fresh:
            self._ids.pop(name, None)
        self._fresh.clear()
