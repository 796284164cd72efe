"""Retrieve Entity straight to its handler, past the routing table and exception layers.

``GET /entities/{id}`` is the request a city's dashboards send most. For it, walking the
route table and the two exception middlewares costs about a third of the request. Here the
same handler runs directly, and what it raises is rendered by the handlers the full stack
uses (``http.problems``): an NgsiLdError as its ProblemDetails, anything else as a logged
500. The request runs once, so a @context that cannot be fetched is waited for once.

The commonest form of it, no query string and no ``Prefer``, ``NGSILD-EntityMap`` or
``NGSILD-Snapshot`` header,
goes further: ``retrieve_plain`` answers it from the headers alone, and its answer is sent
as ASGI messages without a Request or a Response object.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from urbanos.core.policy import OPEN
from urbanos.errors import NgsiLdError
from urbanos.http.endpoints.entity_maps import HEADER as ENTITY_MAP
from urbanos.http.endpoints.entity_reads import NotPlain, retrieve_entity, retrieve_plain
from urbanos.http.endpoints.snapshots import HEADER as SNAPSHOT
from urbanos.http.problems import handle_ngsi_error, handle_unexpected
from urbanos.http.respond import send_json

PREFIX = "/ngsi-ld/v1/entities/"
_READ = {b"accept": "accept", b"link": "link", b"ngsild-tenant": "ngsild-tenant"}
_NOT_PLAIN = {b"prefer", b"via", ENTITY_MAP.lower().encode("latin-1"),
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
                    await self.plain(scope, entity_id, headers, receive, send)
                else:
                    await self.handler(scope, entity_id, receive, send)
                return
        await self.app(scope, receive, send)

    async def plain(
        self, scope: Scope, entity_id: str, headers: dict[str, str], receive: Receive,
        send: Send,
    ) -> None:
        try:
            body, out, media_type = await retrieve_plain(
                self.app.state.services, entity_id, headers, scope.get("principal", OPEN)
            )
        except NotPlain:  # context sources may hold some of it: the full handler
            await self.handler(scope, entity_id, receive, send)
            return
        except Exception as exc:  # noqa: BLE001 - rendered as the full stack would
            fast = self._scope(scope, entity_id)
            await (await _problem(Request(fast, receive), exc))(fast, receive, send)
            return
        scope["route"] = self.route
        await send_json(send, body, out, media_type)

    async def handler(self, scope: Scope, entity_id: str, receive: Receive, send: Send) -> None:
        fast = self._scope(scope, entity_id)
        request = Request(fast, receive)
        try:
            response = await retrieve_entity(request)
        except Exception as exc:  # noqa: BLE001 - rendered as the full stack would
            response = await _problem(request, exc)
        await response(fast, receive, send)

    def _scope(self, scope: Scope, entity_id: str) -> Scope:
        """The scope the router would give the handler; ``scope`` gets the route too (for
        the metrics, which label requests by it)."""
        scope["route"] = self.route
        return {**scope, "app": self.app, "path_params": {"entity_id": entity_id}}


async def _problem(request: Request, exc: Exception) -> Response:
    if isinstance(exc, NgsiLdError):
        return await handle_ngsi_error(request, exc)
    return await handle_unexpected(request, exc)
