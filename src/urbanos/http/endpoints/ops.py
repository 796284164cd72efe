"""Operations endpoints: /health, /metrics, /version, /openapi.json and a /docs page."""

from __future__ import annotations

import html
import re
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from urbanos import __version__
from urbanos.http.context import services
from urbanos.http.metrics import DEAD_LETTERS, REGISTRY


async def health(request: Request) -> Response:
    """200 when the store answers, 503 otherwise (for load balancers and probes)."""
    try:
        ok = await services(request).store.ping()
    except Exception:  # noqa: BLE001 - any store failure means unhealthy
        ok = False
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "store": ok, "version": __version__},
        status_code=200 if ok else 503,
    )


async def metrics(request: Request) -> Response:
    engine = services(request).notifications
    if engine is not None:
        for kind, count in (await engine.dead_letter_counts()).items():
            DEAD_LETTERS.labels(kind).set(count)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def version(request: Request) -> Response:
    return JSONResponse({"name": "urbanos", "version": __version__})


def openapi_document(request: Request) -> dict[str, Any]:
    """The app's OpenAPI description, built once per app from its route table (read from the
    app: the table imports this module)."""
    doc: dict[str, Any] | None = getattr(request.app.state, "openapi", None)
    if doc is None:
        routes = [r for r in request.app.routes if isinstance(r, Route)]
        doc = request.app.state.openapi = _describe(routes)
    return doc


def _describe(routes: list[Route]) -> dict[str, Any]:
    """OpenAPI 3 description built from the route table and the handlers' docstrings."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", route.path)
        doc = (route.endpoint.__doc__ or route.name or "").strip()
        summary = doc.splitlines()[0] if doc else route.name
        for method in sorted((route.methods or set()) - {"HEAD"}):
            op: dict[str, Any] = {
                "operationId": f"{route.name}_{method.lower()}",
                "summary": summary,
                "responses": {
                    "default": {
                        "description": "NGSI-LD response; errors are ProblemDetails",
                    }
                },
            }
            params = re.findall(r"\{(\w+)(?::\w+)?\}", route.path)
            if params:
                op["parameters"] = [
                    {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                    for p in params
                ]
            if method in ("POST", "PATCH", "PUT"):
                op["requestBody"] = {
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "application/ld+json": {"schema": {"type": "object"}},
                    }
                }
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "urbanos NGSI-LD API",
            "version": __version__,
            "description": "ETSI GS CIM 009 NGSI-LD context broker of the urbanos platform.",
        },
        "paths": paths,
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(request))


async def docs(request: Request) -> Response:
    """A self-contained page listing the API (works without any CDN)."""
    rows = []
    for path, ops_ in openapi_document(request)["paths"].items():
        for method, op in ops_.items():
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}"
                f"</code></td><td>{html.escape(op['summary'])}</td></tr>"
            )
    page = (
        "<!doctype html><meta charset=utf-8><title>urbanos API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:.2em .8em}</style>"
        f"<h1>urbanos NGSI-LD API {__version__}</h1>"
        "<p>Machine-readable: <a href=/openapi.json>/openapi.json</a></p>"
        f"<table>{''.join(rows)}</table>"
    )
    return HTMLResponse(page)
