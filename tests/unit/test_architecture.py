"""The layering of docs: core is pure, services never see Starlette, HTTP talks to services
only (no store of any backend, no SQL)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "urbanos"
IO_MODULES = {"asyncio", "sqlite3", "socket", "httpx", "starlette", "uvicorn", "psycopg",
              "aiomqtt", "urllib.request", "http.client", "subprocess", "threading"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def offenders(folder: str, banned: set[str]) -> dict[str, set[str]]:
    bad: dict[str, set[str]] = {}
    for path in sorted((SRC / folder).rglob("*.py")):
        hits = {m for m in imports(path) if any(m == b or m.startswith(b + ".") for b in banned)}
        if hits:
            bad[str(path.relative_to(SRC))] = hits
    return bad


def test_core_does_no_io() -> None:
    assert offenders("core", IO_MODULES | {"urbanos.storage", "urbanos.services",
                                           "urbanos.http"}) == {}


def test_services_do_not_see_http() -> None:
    assert offenders("services", {"starlette", "urbanos.http"}) == {}


def test_http_sees_no_store_and_no_sql() -> None:
    assert offenders("http", {"sqlite3", "psycopg", "psycopg_pool", "urbanos.storage"}) == {}


def test_storage_does_not_see_http() -> None:
    assert offenders("storage", {"starlette", "urbanos.http", "urbanos.services"}) == {}
