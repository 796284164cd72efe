"""Responses with the @context rules of clause 6.3.6: Link header for JSON, inline for JSON-LD."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send

from urbanos.http.negotiation import CONTEXT_REL, GEOJSON_MT, JSONLD_MT, RequestContext
from urbanos.types import JSON


def link_header(url: str) -> str:
    return f'<{url}>; rel="{CONTEXT_REL}"; type="application/ld+json"'


def json_response(
    ctx: RequestContext,
    data: JSON,
    *,
    status: int = 200,
    link_url: str,
    headers: dict[str, str] | None = None,
    with_context: bool = True,
) -> Response:
    """Body in the negotiated media type; ``@context`` inline or as a Link header.

    JSON-LD carries the @context in the body (in every element of an array); GeoJSON does
    too unless the request said ``Prefer: body=json``; plain JSON gets a Link header.
    """
    body, out_headers = json_body(
        ctx, data, link_url=link_url, headers=headers, with_context=with_context
    )
    return Response(body, status_code=status, media_type=ctx.accept, headers=out_headers)


def json_body(
    ctx: RequestContext,
    data: JSON,
    *,
    link_url: str,
    headers: dict[str, str] | None = None,
    with_context: bool = True,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers (but Content-Length and Content-Type) of ``json_response``."""
    out_headers: dict[str, str] = dict(headers or {})
    if ctx.tenant:
        out_headers["NGSILD-Tenant"] = ctx.tenant
    context_value: Any = ctx.context if ctx.context is not None else link_url
    geo_inline = ctx.accept == GEOJSON_MT and not ctx.prefer_json_body
    if with_context and ctx.accept == JSONLD_MT:
        if isinstance(data, list):
            data = [_with_context(d, context_value) for d in data]
        elif isinstance(data, dict):
            data = _with_context(data, context_value)
    elif with_context and geo_inline and isinstance(data, dict):
        data = _with_context(data, context_value)
    elif with_context:
        out_headers["Link"] = link_header(link_url)
    return orjson.dumps(data), out_headers


async def send_json(
    send: Send, body: bytes, headers: dict[str, str], media_type: str, status: int = 200
) -> None:
    """Send what ``Response(body, status, headers, media_type)`` sends, without building one:
    the same header lines in the same order (``media_type`` is never a text/ type here)."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode("latin-1")))
    raw.append((b"content-type", media_type.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _with_context(item: JSON, context_value: Any) -> JSON:
    if isinstance(item, dict):
        return {**item, "@context": context_value}
    return item


def empty(status: int = 204, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, headers=headers)


#: characters left as they are in a paging link's values (readable ids and IRIs); a comma
#: is encoded, so that a Link header's list splits on its own commas only
_SAFE = ":/@!$*()"


def add_paging_links(response: Response, request: Request, ctx: RequestContext, *,
                     limit: int, offset: int, total: int) -> Response:
    """The prev/next Links of a page (clause 6.3.13): the same query with another
    offset, after the response's own Link header. They do not depend on the media type
    ``ctx`` negotiated for the response (see ``_page_link``)."""
    links = []
    if limit and offset > 0:
        links.append(_page_link(request, max(0, offset - limit), limit, "prev"))
    if limit and offset + limit < total:
        links.append(_page_link(request, offset + limit, limit, "next"))
    if links:
        existing = response.headers.get("Link")
        paging = ", ".join(links)
        response.headers["Link"] = f"{existing}, {paging}" if existing else paging
    return response


def _page_link(request: Request, offset: int, limit: int, rel: str) -> str:
    """The caller's query as it was written (parameters in the caller's order, repeated
    ones kept) with ``offset`` and ``limit`` replaced, or added at the end. ``type`` is
    a hint (RFC 8288) naming JSON-LD, the representation every NGSI-LD page has, as the
    clause's examples do."""
    paging = {"offset": str(offset), "limit": str(limit)}
    items: list[tuple[str, str]] = []
    for key, value in request.query_params.multi_items():
        if key in paging:
            if key in dict(items):
                continue  # a repeated offset or limit: the page's value once
            value = paging[key]
        items.append((key, value))
    items += [(k, v) for k, v in paging.items() if k not in request.query_params]
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe=_SAFE)}" for k, v in items)
    return f'<{request.url.path}?{query}>; rel="{rel}"; type="{JSONLD_MT}"'
