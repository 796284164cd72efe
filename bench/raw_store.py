"""The stores' ceilings: executemany of the same document rows, no broker."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg

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


def postgres_rows_per_second(url: str, rows: int = 50_000) -> float | None:
    """The same rows into a JSONB table of a scratch database; None without a server."""
    try:
        admin = psycopg.connect(url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        return None
    name = f"urbanos_raw_{os.getpid()}"
    with admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        target = urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
        with psycopg.connect(target) as conn:
            conn.execute("CREATE TABLE entities (pk BIGSERIAL PRIMARY KEY, tenant TEXT, id TEXT,"
                         " doc JSONB, UNIQUE (tenant, id))")
            conn.commit()
            docs = [("", f"urn:ngsi-ld:Entity:x{i}", orjson.dumps(stellio_entity(i)).decode())
                    for i in range(rows)]
            start = time.perf_counter()
            with conn.cursor() as cur:
                for i in range(0, rows, 1000):
                    cur.executemany("INSERT INTO entities (tenant, id, doc) VALUES (%s, %s, %s)",
                                    docs[i : i + 1000])
                    conn.commit()
            return rows / (time.perf_counter() - start)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
