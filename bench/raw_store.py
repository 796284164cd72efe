"""The store's ceiling: executemany of the same document rows into SQLite, no broker."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

import orjson

from bench.data import stellio_entity


def executemany_rows_per_second(rows: int = 50_000) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "raw.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE entities (pk INTEGER PRIMARY KEY, tenant TEXT, id TEXT, doc BLOB,"
            " UNIQUE (tenant, id))"
        )
        docs = [("", f"urn:ngsi-ld:Entity:x{i}", orjson.dumps(stellio_entity(i)))
                for i in range(rows)]
        start = time.perf_counter()
        for i in range(0, rows, 1000):
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO entities (tenant, id, doc) VALUES (?, ?, ?)",
                             docs[i : i + 1000])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
    return rows / elapsed
