"""Fixtures of the store contract tests: every backend opened through ``open_stores``, as
the app opens it, and reopened or opened twice where a test needs a restart or two nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import reset_postgres
from urbanos.storage import Stores, open_stores


@dataclass
class Backend:
    """One backend's URL; ``open`` may be called again after ``close`` (a restart), or
    twice (two nodes of one database)."""

    kind: str
    url: str
    opened: list[Stores] = field(default_factory=list)

    async def open(self) -> Stores:
        stores = open_stores(self.url, readers=1)
        await stores.open()
        self.opened.append(stores)
        return stores

    async def close(self, stores: Stores) -> None:
        self.opened.remove(stores)
        await stores.close()


async def _backend(kind: str, request: pytest.FixtureRequest,
                   tmp_path: Path) -> AsyncIterator[Backend]:
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/stores.db"}.get(kind, "")
    if kind == "postgres":
        url = request.getfixturevalue("postgres_database")
    backend = Backend(kind, url)
    try:
        yield backend
    finally:
        for stores in list(backend.opened):
            await backend.close(stores)
        if kind == "postgres":
            reset_postgres(url)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async for b in _backend(request.param, request, tmp_path):
        yield b


@pytest.fixture(params=["sqlite", "postgres"])
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The backends that keep data across a restart and roll transactions back."""
    async for b in _backend(request.param, request, tmp_path):
        yield b


@pytest.fixture
async def pg(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async for b in _backend("postgres", request, tmp_path):
        yield b
