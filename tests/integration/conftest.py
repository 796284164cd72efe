"""Fixtures shared by the integration tests: real HTTP receivers for notifications, a
PostgreSQL database of a test's own, and a PostgreSQL server of a test's own (for tests
that restart or crash it)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.conftest import scratch_database
from tests.integration.private_postgres import PrivatePostgres, private_postgres
from tests.integration.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture
def other() -> Iterator[Receiver]:
    """A second receiver, for tests where one subscriber must not hold back another."""
    with Receiver() as r:
        yield r


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database with PostGIS for one test (broker processes open their own)."""
    with scratch_database(f"urbanos_nodes_{os.getpid()}_{time.monotonic_ns()}") as url:
        yield url


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of this test's own, free to restart or crash; removed afterwards."""
    with private_postgres() as server:
        yield server
