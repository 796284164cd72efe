"""``GET /``: what a person who opens the broker's address finds — the version, the store
kind and the ways in (API root, /docs, /openapi.json, /health, /metrics). HTML unless the
Accept header prefers JSON, so a browser gets a page and a script a document.

The API root itself answers nothing (NGSI-LD defines no resource there), so the page names
it and links a first request below it, ``/ngsi-ld/v1/types``."""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from urbanos import __version__
from urbanos.http.context import services
from urbanos.http.negotiation import JSON_MT, choose_accept

HTML_MT = "text/html"
API_ROOT = "/ngsi-ld/v1"
TYPES = API_ROOT + "/types"
LINKS = {
    "api": API_ROOT,
    "types": TYPES,
    "docs": "/docs",
    "openapi": "/openapi.json",
    "health": "/health",
    "metrics": "/metrics",
}
_LABELS = {
    "docs": "the API, operation by operation",
    "openapi": "the OpenAPI 3 description",
    "health": "200 when the store answers",
    "metrics": "Prometheus metrics",
}


def store_kind(url: str) -> str:
    """The store's kind from its URL — never the URL itself, which may carry credentials."""
    scheme = url.partition(":")[0].lower()
    return "postgresql" if scheme == "postgres" else scheme


async def landing(request: Request) -> Response:
    """The broker's landing page: version, store kind and links (HTML, or JSON on request)."""
    store = store_kind(services(request).settings.store)
    headers = {"Vary": "Accept"}
    if choose_accept(request.headers.get("accept"), (HTML_MT, JSON_MT)) == JSON_MT:
        return JSONResponse(
            {"name": "urbanos", "version": __version__, "store": store, "links": LINKS},
            headers=headers,
        )
    items = "".join(
        f'<li><a href="{href}">{href}</a> — {html.escape(label)}</li>'
        for key, label in _LABELS.items()
        for href in [LINKS[key]]
    )
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>urbanos {__version__}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:50em}</style>"
        f"<h1>urbanos <span id=version>{__version__}</span></h1>"
        "<p>An ETSI NGSI-LD context broker, with a "
        f"<span id=store>{html.escape(store)}</span> store.</p>"
        f"<p>NGSI-LD API root: <code id=api>{API_ROOT}</code>; a first request: "
        f'<a href="{TYPES}">{TYPES}</a>, the entity types stored</p>'
        f"<ul>{items}</ul>"
    )
    return HTMLResponse(page, headers=headers)
