"""A grant as an administrator writes it (admin API body, CLI argument) -> ``Grant``.

One reading for every way in, so the API and the CLI accept exactly the same grants: the
tenant is the caller's, the id is made when absent, whoever grants is the caller (an
``assigner`` in the input is ignored), ids must be URIs, idPattern and scopes must be
valid, and type and attribute names are expanded to IRIs with the caller's @context.
"""

from __future__ import annotations

from collections.abc import Callable

from urbanos.core.entity import check_name, check_scopes, is_uri
from urbanos.core.policy import Grant, Target
from urbanos.core.selection import check_id_pattern
from urbanos.errors import BadRequestData
from urbanos.types import JSONObject


def grant_from_input(body: JSONObject, tenant: str, expand: Callable[[str], str],
                     new_id: Callable[[], str]) -> Grant:
    """The grant ``body`` describes in ``tenant``; BadRequestData saying what is wrong."""
    if "tenant" in body and body["tenant"] != tenant:
        raise BadRequestData(
            f"grant tenant {body['tenant']!r} differs from the NGSILD-Tenant header's "
            f"{tenant!r}: a grant is added in the tenant of the request"
        )
    doc = dict(body) | {"tenant": tenant}
    doc.pop("assigner", None)
    if "id" not in doc:
        doc["id"] = new_id()
    elif not is_uri(doc["id"]):
        raise BadRequestData(f"grant id must be a URI, got {doc['id']!r}")
    try:
        grant = Grant.from_json(doc)
    except ValueError as exc:
        raise BadRequestData(str(exc)) from None
    t = grant.target
    for entity_id in t.ids:
        if not is_uri(entity_id):
            raise BadRequestData(f"grant target ids: {entity_id!r} is not a URI")
    if t.id_pattern is not None:
        check_id_pattern(t.id_pattern)
    check_scopes(list(t.scopes))

    def names(values: tuple[str, ...], what: str) -> tuple[str, ...]:
        return tuple(expand(check_name(v, what)) for v in values)

    target = Target(
        ids=t.ids, id_pattern=t.id_pattern, types=names(t.types, "entity type"),
        scopes=t.scopes,
        attributes=None if t.attributes is None else names(t.attributes, "attribute name"),
        hidden=names(t.hidden, "attribute name"),
    )
    return Grant(grant.id, grant.tenant, grant.assignee, grant.actions, target, grant.assigner)
