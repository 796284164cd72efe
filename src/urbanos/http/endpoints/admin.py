"""Operator endpoints under /admin (not NGSI-LD): the notification outbox's dead letters.

Two kinds share one listing and one id sequence. ``matching``: a change whose matching
failed for a subscription (or, with ``subscriptionId`` null, for the change as a whole);
delivery retries it with backoff until it yields its notifications, and ``retry`` makes it
due now. ``delivery``: a notification whose sends were exhausted or refused; it waits for
an operator, and ``retry`` sends it again as a fresh delivery. ``DELETE`` discards either.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from urbanos.core.timeutil import format_datetime
from urbanos.errors import BadRequestData, ResourceNotFound
from urbanos.http.context import services
from urbanos.http.params import check_params, paging
from urbanos.http.respond import empty
from urbanos.services.notifications import DeadDelivery, DeadLetter, NotificationEngine
from urbanos.types import JSONObject


def _time(seconds: float) -> str:
    return format_datetime(datetime.fromtimestamp(seconds, UTC))


def _render(letter: DeadLetter | DeadDelivery) -> JSONObject:
    if isinstance(letter, DeadDelivery):
        return _render_delivery(letter)
    change = letter.change
    return {
        "id": letter.id,
        "kind": "matching",
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


def _render_delivery(letter: DeadDelivery) -> JSONObject:
    """The notification as it would be sent: the body (for MQTT, unwrapped from its
    metadata), the headers, the endpoint."""
    e = letter.envelope
    try:
        body = orjson.loads(e.payload)
    except orjson.JSONDecodeError:
        body = e.payload.decode("utf-8", "replace")
    if isinstance(body, dict) and e.uri.startswith(("mqtt://", "mqtts://")):
        body = body.get("body", body)
    return {
        "id": letter.id,
        "kind": "delivery",
        "tenant": letter.tenant,
        "subscriptionId": letter.subscription_id,
        "endpoint": e.uri,
        "headers": e.headers,
        "notification": body,
        "attempts": letter.attempts,
        "failedAt": _time(letter.failed_at),
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


def _engine_and_id(request: Request) -> tuple[NotificationEngine, int]:
    raw = request.path_params["dead_id"]
    try:
        dead_id = int(raw)
    except ValueError as exc:
        raise BadRequestData(f"a dead letter id is an integer, got {raw!r}") from exc
    engine = services(request).notifications
    if engine is None:
        raise ResourceNotFound(f"dead letter {dead_id} not found")
    return engine, dead_id


async def retry_dead_letter(request: Request) -> Response:
    """Retry a dead letter now (204): a matching one at once instead of at its next
    attempt, a delivery one as a fresh delivery (attempts from zero)."""
    engine, dead_id = _engine_and_id(request)
    await engine.requeue_dead_letter(dead_id)
    return empty()


async def delete_dead_letter(request: Request) -> Response:
    """Discard a dead letter (204): what it owed is never sent."""
    engine, dead_id = _engine_and_id(request)
    await engine.discard_dead_letter(dead_id)
    return empty()
