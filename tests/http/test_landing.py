"""``GET /``: a landing page for a person (HTML) or a script (JSON), on every store."""

from __future__ import annotations

import re

import httpx

from urbanos import __version__
from urbanos.http.endpoints.landing import store_kind
from urbanos.settings import Settings

ROOT = "http://broker/"
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
LINKS = ["/ngsi-ld/v1/types", "/docs", "/openapi.json", "/health", "/metrics"]


def kind(settings: Settings) -> str:
    """The store kind the page should name: the test stores' URL schemes are the kinds."""
    return settings.store.split(":", 1)[0]


async def test_a_browser_gets_a_page_with_version_store_and_links(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    for headers in ({"Accept": BROWSER}, {}, {"Accept": "*/*"}):
        r = await client.get(ROOT, headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.headers["vary"] == "Accept"
        page = r.text
        assert f"<span id=version>{__version__}</span>" in page
        assert f"<span id=store>{kind(settings)}</span>" in page
        assert "<code id=api>/ngsi-ld/v1</code>" in page
        assert re.findall(r'href="([^"]+)"', page) == LINKS
        assert settings.store not in page


async def test_every_link_on_the_page_answers(client: httpx.AsyncClient) -> None:
    page = (await client.get(ROOT)).text
    for href in re.findall(r'href="([^"]+)"', page):
        r = await client.get("http://broker" + href)
        assert r.status_code == 200, (href, r.text)


async def test_a_script_gets_json(client: httpx.AsyncClient, settings: Settings) -> None:
    r = await client.get(ROOT, headers={"Accept": "application/json"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "name": "urbanos",
        "version": __version__,
        "store": kind(settings),
        "links": {"api": "/ngsi-ld/v1", "types": "/ngsi-ld/v1/types", "docs": "/docs",
                  "openapi": "/openapi.json", "health": "/health", "metrics": "/metrics"},
    }
    r = await client.get(ROOT, headers={"Accept": "text/html;q=0.5, application/json"})
    assert r.json()["version"] == __version__


async def test_an_accept_allowing_neither_is_406(client: httpx.AsyncClient) -> None:
    r = await client.get(ROOT, headers={"Accept": "image/png"})
    assert r.status_code == 406
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest"


def test_the_store_kind_never_shows_the_url() -> None:
    assert store_kind("postgresql://alice:s3cret@db.example:5432/city") == "postgresql"
    assert store_kind("postgres://alice:s3cret@db.example/city") == "postgresql"
    assert store_kind("sqlite:////var/lib/urbanos/urbanos.db") == "sqlite"
    assert store_kind("memory://") == "memory"
