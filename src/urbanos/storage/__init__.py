"""Stores behind one interface (``base``): memory, SQLite, and later PostgreSQL."""

from __future__ import annotations

from urbanos.storage.base import EntityStore


def open_store(url: str, *, readers: int = 4) -> EntityStore:
    """The store a URL names: ``sqlite:///relative.db``, ``sqlite:////abs.db``, ``memory://``."""
    if url.startswith("sqlite://"):
        from urbanos.storage.sqlite import SqliteStore

        path = url.removeprefix("sqlite://").removeprefix("/")
        return SqliteStore(path or "./data/urbanos.db", readers=readers)
    if url.startswith("memory:"):
        from urbanos.storage.memory import MemoryStore

        return MemoryStore()
    raise SystemExit(f"URBANOS_STORE: unsupported store URL {url!r}")
