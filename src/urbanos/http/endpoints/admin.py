"""Operator endpoints under /admin (not NGSI-LD): the notification outbox's dead letters.

A dead letter is a change whose matching failed for a subscription (or, with
``subscriptionId`` null, for the change as a whole): delivery keeps it and retries it with
backoff until it yields its notifications. The listing shows what waits and why; ``retry``
makes one due now.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from urbanos.core.timeutil import format_datetime
from urbanos.errors import BadRequestData, ResourceNotFound
from urbanos.http.context import services
from urbanos.http.params import check_params, paging
from urbanos.http.respond import empty
from urbanos.services.notifications import DeadLetter
from urbanos.types import JSONObject


def _time(seconds: float) -> str:
    return format_datetime(datetime.fromtimestamp(seconds, UTC))


def _render(letter: DeadLetter) -> JSONObject:
    change = letter.change
    return {
        "id": letter.id,
        "tenant": change.tenant,
        "subscriptionId": letter.subscription_id,
        "entityId": change.entity_id,
        "changedAt": change.at,
        "deleted": change.after is None,
        "attempts": letter.attempts,
        "firstFailedAt": _time(letter.first_failed),
        "nextAttemptAt": _time(letter.next_at),
        "lastError": letter.error,
    }


async def list_dead_letters(request: Request) -> Response:
    """List the dead letters of notification delivery, oldest first (limit, offset)."""
    check_params(request.query_params, {"limit", "offset"})
    svc = services(request)
    limit, offset, _ = paging(request.query_params, svc.settings)
    engine = svc.notifications
    letters = [] if engine is None else await engine.dead_letters(limit + offset)
    return JSONResponse([_render(d) for d in letters[offset:]])


async def retry_dead_letter(request: Request) -> Response:
    """Retry a dead letter now (204), instead of at its next attempt."""
    raw = request.path_params["dead_id"]
    try:
        dead_id = int(raw)
    except ValueError as exc:
        raise BadRequestData(f"a dead letter id is an integer, got {raw!r}") from exc
    engine = services(request).notifications
    if engine is None:
        raise ResourceNotFound(f"dead letter {dead_id} not found")
    await engine.requeue_dead_letter(dead_id)
    return empty()
