"""Retrieve Entity straight to its handler, past the routing table and exception layers.

``GET /entities/{id}`` is the request a city's dashboards send most. For it, walking the
route table and the two exception middlewares costs about a third of the request. Here the
same handler runs directly; whatever it raises (404, a bad header, a fault) is not handled
here: the request goes again through the full stack, which renders the error. A GET without
a body is safe to run twice.

The commonest form of it, no query string and no ``Prefer``, ``NGSILD-EntityMap`` or
``NGSILD-Snapshot`` header,
goes further: ``retrieve_plain`` answers it from the headers alone, and its answer is sent
as ASGI messages without a Request or a Response object.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from urbanos.http.endpoints.entity_maps import HEADER as ENTITY_MAP
from urbanos.http.endpoints.entity_reads import retrieve_entity, retrieve_plain
from urbanos.http.endpoints.snapshots import HEADER as SNAPSHOT
from urbanos.http.respond import send_json

PREFIX = "/ngsi-ld/v1/entities/"
_READ = {b"accept": "accept", b"link": "link", b"ngsild-tenant": "ngsild-tenant"}
_NOT_PLAIN = {b"prefer", ENTITY_MAP.lower().encode("latin-1"),
              SNAPSHOT.lower().encode("latin-1")}


def plain_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str] | None:
    """The headers ``retrieve_plain`` reads, first value of each, as Starlette's Headers
    gives them; None when the request carries one it does not handle."""
    found: dict[str, str] = {}
    for name, value in raw:
        key = _READ.get(name)
        if key is not None:
            if key not in found:
                found[key] = value.decode("latin-1")
        elif name in _NOT_PLAIN:
            return None
    return found


class FastRetrieve:
    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.route = next(
            r for r in app.routes
            if isinstance(r, Route) and r.endpoint is retrieve_entity
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            entity_id = path[len(PREFIX):]
            if (path.startswith(PREFIX) and entity_id and "/" not in entity_id
                    and not scope["query_string"]):
                headers = plain_headers(scope["headers"])
                if headers is not None:
                    answered = await self.plain(scope, entity_id, headers, send)
                else:
                    answered = await self.handler(scope, entity_id, receive, send)
                if answered:
                    return
        await self.app(scope, receive, send)

    async def plain(
        self, scope: Scope, entity_id: str, headers: dict[str, str], send: Send
    ) -> bool:
        try:
            body, out, media_type = await retrieve_plain(
                self.app.state.services, entity_id, headers
            )
        except Exception:  # noqa: BLE001 - the full stack answers it, see above
            return False
        scope["route"] = self.route
        await send_json(send, body, out, media_type)
        return True

    async def handler(self, scope: Scope, entity_id: str, receive: Receive, send: Send) -> bool:
        fast = {**scope, "app": self.app, "route": self.route,
                "path_params": {"entity_id": entity_id}}
        try:
            response = await retrieve_entity(Request(fast, receive))
        except Exception:  # noqa: BLE001 - the full stack answers it, see above
            return False
        scope["route"] = self.route
        await response(fast, receive, send)
        return True
