"""Stores behind one interface each (``base``, ``subscriptions``, ``temporal``, ``outbox``,
``snapshots``, ``access``, ``registrations``): memory, SQLite and PostgreSQL.

``open_stores(url)`` is the one place that knows which backend a URL names; it builds every
store of that backend on the same file or database. Generic modules never import a
backend: each backend imports the interfaces it implements, and only this module imports
the backends (lazily: a SQLite broker never loads psycopg).
"""

from __future__ import annotations

from dataclasses import dataclass

from urbanos.storage.access import AccessStore
from urbanos.storage.base import ContextStore, EntityStore
from urbanos.storage.outbox import Outbox
from urbanos.storage.registrations import RegistrationStore
from urbanos.storage.snapshots import SnapshotStore
from urbanos.storage.subscriptions import SubscriptionStore
from urbanos.storage.temporal import TemporalStore

__all__ = ["Stores", "open_stores"]


@dataclass(frozen=True, slots=True)
class Stores:
    """Every store of one backend. History, the outbox and the audit of writes (``access``)
    are write hooks of ``entities`` (registered when they are built, in that order): they
    commit with each entity write."""

    entities: EntityStore
    subscriptions: SubscriptionStore
    temporal: TemporalStore
    outbox: Outbox
    snapshots: SnapshotStore
    access: AccessStore
    registrations: RegistrationStore

    @property
    def contexts(self) -> ContextStore:
        return self.entities.contexts

    async def open(self) -> None:
        """Open the file or database, then each store's tables; the outbox last, since
        SQLite's checks for the subscriptions table."""
        await self.entities.open()
        await self.subscriptions.open()
        await self.temporal.open()
        await self.snapshots.open()
        await self.access.open()
        await self.registrations.open()
        await self.outbox.open()

    async def close(self) -> None:
        await self.subscriptions.close()
        await self.temporal.close()
        await self.access.close()
        await self.registrations.close()
        await self.entities.close()


def open_stores(url: str, *, readers: int = 4, synchronous: str = "full") -> Stores:
    """The stores a URL names: ``sqlite:///relative.db``, ``sqlite:////abs.db``, ``memory://``,
    ``postgresql://user@host:port/db`` (libpq URL; the pool holds ``readers + 4``).
    ``synchronous`` is SQLite's durability level (``storage.sqlite.database``)."""
    if url.startswith("sqlite://"):
        from urbanos.storage.sqlite import SqliteStore
        from urbanos.storage.sqlite.access import SqliteAccessStore
        from urbanos.storage.sqlite.outbox import SqliteOutbox
        from urbanos.storage.sqlite.registrations import SqliteRegistrationStore
        from urbanos.storage.sqlite.snapshots import SqliteSnapshotStore
        from urbanos.storage.sqlite.subscriptions import SqliteSubscriptionStore
        from urbanos.storage.sqlite.temporal import SqliteTemporalStore

        path = url.removeprefix("sqlite://").removeprefix("/")
        lite = SqliteStore(path or "./data/urbanos.db", readers=readers, synchronous=synchronous)
        return Stores(lite, SqliteSubscriptionStore(lite.db), SqliteTemporalStore(lite),
                      SqliteOutbox(lite), SqliteSnapshotStore(lite.db), SqliteAccessStore(lite),
                      SqliteRegistrationStore(lite.db))
    if url.startswith(("postgresql://", "postgres://")):
        from urbanos.storage.postgres import PostgresStore
        from urbanos.storage.postgres.access import PostgresAccessStore
        from urbanos.storage.postgres.outbox import PostgresOutbox
        from urbanos.storage.postgres.registrations import PostgresRegistrationStore
        from urbanos.storage.postgres.snapshots import PostgresSnapshotStore
        from urbanos.storage.postgres.subscriptions import PostgresSubscriptionStore
        from urbanos.storage.postgres.temporal import PostgresTemporalStore

        pg = PostgresStore(url, pool_size=readers + 4)
        return Stores(pg, PostgresSubscriptionStore(pg), PostgresTemporalStore(pg),
                      PostgresOutbox(pg), PostgresSnapshotStore(pg.db), PostgresAccessStore(pg),
                      PostgresRegistrationStore(pg))
    if url.startswith("memory:"):
        from urbanos.storage.memory import MemoryStore
        from urbanos.storage.memory_access import MemoryAccessStore
        from urbanos.storage.memory_outbox import MemoryOutbox
        from urbanos.storage.memory_registrations import MemoryRegistrationStore
        from urbanos.storage.memory_temporal import MemoryTemporalStore
        from urbanos.storage.snapshots import MemorySnapshotStore
        from urbanos.storage.subscriptions import MemorySubscriptionStore

        memory = MemoryStore()
        return Stores(memory, MemorySubscriptionStore(), MemoryTemporalStore(memory),
                      MemoryOutbox(memory), MemorySnapshotStore(), MemoryAccessStore(memory),
                      MemoryRegistrationStore())
    raise SystemExit(f"URBANOS_STORE: unsupported store URL {url!r}")
