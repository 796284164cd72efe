"""The claim mapping: which token claims give the subject, client, roles and groups."""

from __future__ import annotations

import pytest

from urbanos.core.policy import ANY_TENANT, Role
from urbanos.services.auth_claims import ClaimMap

KEYCLOAK = {
    "sub": "f1c2", "azp": "dashboard", "scope": "openid profile email",
    "realm_access": {"roles": ["offline_access", "reader", "b:writer"]},
    "resource_access": {"urbanos": {"roles": ["subscriber"]}},
    "groups": ["/city/traffic"], "department": "mobility",
}


def test_defaults() -> None:
    mapping = ClaimMap.parse("")
    payload = {"sub": "s", "client_id": "c", "roles": ["writer", "nonsense", "a:tenantAdmin"],
               "urbanos_tenants": {"b": ["reader", "subscriber"], "c": "writer", "d": 5},
               "groups": "/one", "scope": "read write"}
    assert mapping.client_of(payload) == "c"
    assert mapping.roles_of(payload, ANY_TENANT) == {
        ANY_TENANT: {Role.WRITER}, "a": {Role.TENANT_ADMIN},
        "b": {Role.READER, Role.SUBSCRIBER}, "c": {Role.WRITER}}
    assert mapping.claims_of(payload) == {
        "groups": {"/one"}, "roles": {"writer", "nonsense", "a:tenantAdmin"},
        "scope": {"read", "write"}}
    assert mapping.client_of({"azp": "first", "client_id": "second"}) == "first"


def test_a_tenant_issuer_gives_roles_in_its_tenant_only() -> None:
    payload = {"roles": ["reader", "a:writer", "b:platformAdmin", "platformAdmin"],
               "urbanos_tenants": {"a": ["subscriber"], "b": ["tenantAdmin"]}}
    assert ClaimMap().roles_of(payload, "a") == {
        "a": {Role.READER, Role.WRITER, Role.SUBSCRIBER, Role.PLATFORM_ADMIN}}
    assert ClaimMap().roles_of(payload, "c") == {"c": {Role.READER, Role.PLATFORM_ADMIN}}


def test_keycloak_mapping() -> None:
    mapping = ClaimMap.parse(
        '{"roles": ["realm_access.roles", "resource_access.urbanos.roles"],'
        ' "keep": ["department"]}')
    assert mapping.roles_of(KEYCLOAK, ANY_TENANT) == {
        ANY_TENANT: {Role.READER, Role.SUBSCRIBER}, "b": {Role.WRITER}}
    assert mapping.client_of(KEYCLOAK) == "dashboard"
    kept = mapping.claims_of(KEYCLOAK)
    assert kept["department"] == {"mobility"}
    assert kept["scope"] == {"openid", "profile", "email"}
    assert kept["roles"] == {"offline_access", "reader", "b:writer", "subscriber"}


def test_namespaced_claim_with_dots_is_found_whole() -> None:
    mapping = ClaimMap.parse({"roles": "https://city.example/roles", "groups": "memberOf"})
    payload = {"https://city.example/roles": ["writer"], "memberOf": ["parks"]}
    assert mapping.roles_of(payload, "x") == {"x": {Role.WRITER}}
    assert mapping.claims_of(payload)["groups"] == {"parks"}


def test_issuer_mapping_over_the_platform_one() -> None:
    platform = ClaimMap.parse({"groups": "teams", "keep": ["dept"]})
    issuer = ClaimMap.parse({"subject": "oid"}, platform)
    assert (issuer.subject, issuer.groups, issuer.keep) == ("oid", "teams", ("dept",))


@pytest.mark.parametrize("text, message", [
    ("[1]", "a JSON object is required"),
    ("{nope", "not JSON"),
    ('{"role": "x"}', "unknown member"),
    ('{"subject": ""}', "subject: a claim name is required"),
    ('{"roles": [1]}', "roles: a claim name or a list"),
])
def test_bad_mappings(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClaimMap.parse(text)


def test_odd_claim_values_give_nothing() -> None:
    payload = {"roles": {"reader": True}, "groups": [1, None, ""], "scope": 7,
               "urbanos_tenants": ["a"]}
    assert ClaimMap().roles_of(payload, ANY_TENANT) == {}
    assert ClaimMap().claims_of(payload) == {}
