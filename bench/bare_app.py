"""The HTTP stack's ceiling: Starlette + uvicorn answering one fixed entity, nothing else."""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY = orjson.dumps(
    {"id": "urn:ngsi-ld:Entity:r1", "type": "Entity",
     "name": {"type": "Property", "value": "Name of my entity"},
     "dissolvedOxygen": {"type": "Property", "value": 8.9}}
)


async def entity(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/", entity)])
