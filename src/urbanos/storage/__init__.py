"""Stores behind one interface (``base``): memory, SQLite and PostgreSQL."""

from __future__ import annotations

from urbanos.storage.base import EntityStore


def open_store(url: str, *, readers: int = 4, synchronous: str = "full") -> EntityStore:
    """The store a URL names: ``sqlite:///relative.db``, ``sqlite:////abs.db``, ``memory://``,
    ``postgresql://user@host:port/db`` (libpq URL; the pool holds ``readers + 4``).
    ``synchronous`` is SQLite's durability level (``storage.sqlite.database``)."""
    if url.startswith("sqlite://"):
        from urbanos.storage.sqlite import SqliteStore

        path = url.removeprefix("sqlite://").removeprefix("/")
        return SqliteStore(path or "./data/urbanos.db", readers=readers, synchronous=synchronous)
    if url.startswith(("postgresql://", "postgres://")):
        from urbanos.storage.postgres import PostgresStore

        return PostgresStore(url, pool_size=readers + 4)
    if url.startswith("memory:"):
        from urbanos.storage.memory import MemoryStore

        return MemoryStore()
    raise SystemExit(f"URBANOS_STORE: unsupported store URL {url!r}")
