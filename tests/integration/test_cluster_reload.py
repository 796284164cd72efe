"""A node of a PostgreSQL cluster reloads its subscription index in the background when
told that anything may have changed; when that reload fails, the failure is logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import _lifespan, reset_postgres
from urbanos.http.app import create_app
from urbanos.services.subscriptions import SubscriptionService
from urbanos.settings import Settings
from urbanos.storage.postgres.listen import SUBSCRIPTIONS_CHANNEL

MESSAGE = "reloading the subscriptions after a lost connection failed"


@pytest.fixture
def pg_url(postgres_database: str) -> Iterator[str]:
    yield postgres_database
    reset_postgres(postgres_database)


async def test_a_failed_background_reload_is_logged(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(store=pg_url))
    async with _lifespan(app):

        async def unavailable(self: SubscriptionService) -> None:
            raise OSError("the index could not be read")

        monkeypatch.setattr(SubscriptionService, "open", unavailable)
        with caplog.at_level(logging.ERROR, logger="urbanos"):
            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
                # what the node hears after reconnecting: anything may have changed
                await conn.execute(f"NOTIFY {SUBSCRIPTIONS_CHANNEL}, '*'")
            for _ in range(500):  # the reload runs in the background
                if any(r.getMessage() == MESSAGE for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
        [record] = [r for r in caplog.records if r.getMessage() == MESSAGE]
        assert record.exc_info is not None and record.exc_info[0] is OSError
