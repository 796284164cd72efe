"""What an acknowledged SQLite write survives: the ``synchronous`` level every connection of
the store runs at (FULL by default: power loss; NORMAL when configured: a killed process),
and @context URLs handed out only once their entry is committed."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from starlette.applications import Starlette

from tests.conftest import CORE, _lifespan
from urbanos.http.app import create_app
from urbanos.outbound import OutboundPolicy
from urbanos.services.contexts import ContextService
from urbanos.settings import Settings
from urbanos.storage import open_stores
from urbanos.storage.base import Write
from urbanos.storage.sqlite import SqliteStore
from urbanos.storage.sqlite.database import Database

FULL, NORMAL = 2, 1  # what PRAGMA synchronous reads back
DOC = {"id": "urn:e:1", "type": ["T"], "attrs": {}}


def _level(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA synchronous").fetchone()[0])


async def _levels(store: SqliteStore) -> set[int]:
    """The level of the writer connection, of a reader thread's and of the calling thread's."""
    await store.apply("", [Write("put", "urn:e:1", DOC)])
    return {
        await store.db.transact(_level),
        await store.db.read(_level),
        store.db.read_now(_level),
    }


@pytest.mark.parametrize(("options", "level"), [({}, FULL), ({"synchronous": "normal"}, NORMAL)])
async def test_writes_are_synced_in_full_unless_normal_is_asked(
    tmp_path: Path, options: dict[str, str], level: int
) -> None:
    stores = open_stores(f"sqlite:///{tmp_path}/d.db", **options)
    store = stores.entities
    assert isinstance(store, SqliteStore)
    await stores.open()
    try:
        assert await _levels(store) == {level}
    finally:
        await stores.close()


def _starlette(app: Any) -> Starlette:
    while not isinstance(app, Starlette):
        app = app.app
    return app


@pytest.mark.parametrize(("env", "level"), [({}, FULL), ({"URBANOS_SQLITE_SYNCHRONOUS": "normal"},
                                                         NORMAL)])
async def test_the_setting_reaches_the_store_of_the_app(
    tmp_path: Path, env: dict[str, str], level: int
) -> None:
    settings = Settings.from_env(env, store=f"sqlite:///{tmp_path}/a.db")
    app = create_app(settings)
    async with _lifespan(app):
        store = _starlette(app).state.services.store
        assert await _levels(store) == {level}


def test_an_unknown_level_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous must be one of full, normal"):
        Database(tmp_path / "x.db", synchronous="off")


async def test_an_implicitly_created_context_is_stored_before_its_url_is_returned(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "c.db")
    await store.open()
    contexts = ContextService(OutboundPolicy(), store=store.contexts, public_url="http://b")
    context = [CORE, {"speed": "urn:ex:speed"}]
    try:
        urls = await asyncio.gather(*(contexts.link_url(context) for _ in range(3)))
        assert len(set(urls)) == 1  # one entry for the requests that raced to create it
        local_id = unquote(urls[0].rsplit("/", 1)[1])
        other = SqliteStore(tmp_path / "c.db")  # another process's view of the file
        await other.open()
        try:
            entry = await other.contexts.get("", local_id)
            assert entry is not None and entry.kind == "ImplicitlyCreated"
            assert entry.document == {"@context": context}
            assert [e.local_id for _, e in await other.contexts.load("")] == [local_id]
        finally:
            await other.close()
    finally:
        await contexts.aclose()
        await store.close()
