"""/info/sourceIdentity: who this Context Source is (clause 5.15.1, data type 5.2.40).

Peers store the ``contextSourceAlias`` in their registrations and compare it with Via
headers to detect loops, so it must be stable across restarts and, with tenants, name the
tenant as well as the broker (clause 4.14): a tenant of this broker federating with another
of its tenants must not look like a loop.
"""

from __future__ import annotations

import hashlib
import socket
import time
import uuid

from starlette.requests import Request
from starlette.responses import Response

from urbanos import __version__
from urbanos.core.jsonld import CORE_CONTEXT_URL, core_term_map
from urbanos.core.timeutil import now_iso
from urbanos.http.context import services
from urbanos.http.negotiation import RequestContext, choose_accept, tenant_of
from urbanos.http.params import check_params
from urbanos.http.respond import json_response
from urbanos.services.stores import DEFAULT_TENANT
from urbanos.types import JSONObject


def source_alias(base_url: str, tenant: str, host: str | None = None) -> str:
    """A stable token (an RFC 9110 Via pseudonym) naming this broker and ``tenant``.

    The broker part hashes the host name with the public URL, so two installations
    left on the default URL still differ; a tenant adds a hash of its name, since tenant
    names may hold characters a token cannot.
    """
    node = uuid.uuid5(uuid.NAMESPACE_URL, f"{host or socket.gethostname()}|{base_url}")
    alias = f"urbanos-{node.hex[:16]}"
    if tenant != DEFAULT_TENANT:
        alias += "-t" + hashlib.sha256(tenant.encode()).hexdigest()[:16]
    return alias


def iso_duration(seconds: float) -> str:
    """``seconds`` as an ISO 8601 duration with days, hours, minutes and milliseconds."""
    millis = max(0, round(seconds * 1000))
    days, millis = divmod(millis, 86_400_000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"P{days}DT{hours}H{minutes}M{millis // 1000}.{millis % 1000:03d}S"


async def source_identity(request: Request) -> Response:
    """Retrieve Context Source Identity Information (clause 5.15.1): a ContextSourceIdentity.

    Answered for any well-formed tenant, existing or not: the identity describes the
    source, not data held in the tenant.
    """
    check_params(request.query_params, ())
    # The members are core terms, so no @context from the request is fetched or needed.
    ctx = RequestContext(
        tenant=tenant_of(request), context=None, terms=core_term_map(),
        accept=choose_accept(request.headers.get("accept")),
    )
    alias = source_alias(services(request).settings.base_url, ctx.tenant)
    started: float = getattr(request.app.state, "started", time.monotonic())
    data: JSONObject = {
        "id": f"urn:ngsi-ld:ContextSourceIdentity:{alias}",
        "type": "ContextSourceIdentity",
        "contextSourceAlias": alias,
        "contextSourceUptime": iso_duration(time.monotonic() - started),
        "contextSourceTimeAt": now_iso(),
        "contextSourceExtras": {"product": "urbanos", "version": __version__},
    }
    return json_response(ctx, data, link_url=CORE_CONTEXT_URL)
