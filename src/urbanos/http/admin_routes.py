"""The routes of the administration API (``/urbanos/v1``), for the app's route table."""

from __future__ import annotations

from starlette.routing import Route

from urbanos.http.endpoints import access_admin as a

V = a.BASE

ADMIN_ROUTES = [
    Route(V + "/grants", a.list_grants, methods=["GET"]),
    Route(V + "/grants", a.create_grant, methods=["POST"]),
    Route(V + "/grants/{grant_id}", a.get_grant, methods=["GET"]),
    Route(V + "/grants/{grant_id}", a.delete_grant, methods=["DELETE"]),
    Route(V + "/keys", a.list_keys, methods=["GET"]),
    Route(V + "/keys", a.create_key, methods=["POST"]),
    Route(V + "/keys/{key_id}", a.revoke_key, methods=["DELETE"]),
    Route(V + "/issuers", a.list_issuers, methods=["GET"]),
    Route(V + "/issuers", a.add_issuer, methods=["POST"]),
    Route(V + "/issuers", a.delete_issuer, methods=["DELETE"]),
    Route(V + "/audit", a.query_audit, methods=["GET"]),
    Route(V + "/tenants", a.list_tenants, methods=["GET"]),
    Route(V + "/me", a.me, methods=["GET"]),
]
