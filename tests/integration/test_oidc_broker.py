"""The whole path with real parts: a broker process with OIDC on, real OpenID Connect
providers (npm's oidc-provider) for the platform and for one tenant added at run time,
tokens obtained by the client-credentials and authorization-code flows, a key rotation
in the middle, and the audit log saying who did what."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.broker_process import Broker
from tests.integration.oidc_provider import RESOURCE, OidcProvider

CLAIMS = {
    "service": {"roles": ["writer"], "groups": ["/city/river"]},
    "admin": {"roles": ["platformAdmin"]},
    "aiko": {"groups": ["/citizens"]},
}
E = "entities"


@pytest.fixture(scope="module")
def providers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, OidcProvider]]:
    work = tmp_path_factory.mktemp("oidc-broker")
    started: dict[str, OidcProvider] = {}
    try:
        started["platform"] = OidcProvider(work, "platform", claims=CLAIMS).start()
        started["kobe"] = OidcProvider(
            work, "kobe", claims={"service": {"roles": ["writer"]}}).start()
        yield started
    finally:
        for provider in started.values():
            provider.stop()


@pytest.fixture
def broker(tmp_path: Path, providers: dict[str, OidcProvider]) -> Iterator[Broker]:
    env = dict(os.environ, URBANOS_AUTH="oidc,apikey",
               URBANOS_OIDC_ISSUER=providers["platform"].issuer,
               URBANOS_OIDC_AUDIENCE=RESOURCE)
    b = Broker(f"sqlite:///{tmp_path}/city.db", tmp_path / "broker.log", env=env)
    b.start()
    try:
        yield b
    finally:
        b.stop()
        b.client.close()


def call(b: Broker, method: str, path: str, token: str | None = None,
         tenant: str | None = None, **kwargs: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if tenant:
        headers["NGSILD-Tenant"] = tenant
    return b.client.request(method, b.url + path, headers=headers, **kwargs)  # type: ignore[arg-type]


def gauge(n: int) -> dict[str, object]:
    return {"id": f"urn:ngsi-ld:RiverGauge:{n}", "type": "RiverGauge",
            "level": {"type": "Property", "value": 1.5 + n}}


async def test_tokens_from_real_providers_through_the_broker(
    broker: Broker, providers: dict[str, OidcProvider]
) -> None:
    platform, kobe = providers["platform"], providers["kobe"]
    service = await platform.client_credentials("service")
    assert call(broker, "POST", E, service, json=gauge(1)).status_code == 201
    # a citizen logged in through the authorization-code flow has no role: nothing to see
    citizen = await platform.authorization_code("aiko")
    r = call(broker, "GET", E + "/urn:ngsi-ld:RiverGauge:1", citizen)
    assert r.status_code == 404
    # the platform admin opens gauges to citizens with a grant on the admin API
    admin = await platform.authorization_code("admin")  # an operator who logs in
    grant = {"assignee": "claim:groups=/citizens", "action": "read",
             "target": {"types": ["RiverGauge"]}}
    r = call(broker, "POST", "../../urbanos/v1/grants", admin, json=grant)
    assert r.status_code == 201, r.text
    r = call(broker, "GET", E + "/urn:ngsi-ld:RiverGauge:1", citizen)
    assert r.status_code == 200 and r.json()["level"]["value"] == 2.5
    assert call(broker, "DELETE", E + "/urn:ngsi-ld:RiverGauge:1", citizen).status_code == 403

    # Kobe brings its own identity provider, added at run time: its tokens work in Kobe only
    kobe_token = await kobe.client_credentials("service")
    assert call(broker, "POST", E, kobe_token, "kobe", json=gauge(2)).status_code == 401
    r = call(broker, "POST", "../../urbanos/v1/issuers", admin,
             json={"tenant": "kobe", "url": kobe.issuer, "audience": RESOURCE})
    assert r.status_code == 201, r.text
    assert call(broker, "POST", E, kobe_token, "kobe", json=gauge(2)).status_code == 201
    assert call(broker, "POST", E, kobe_token, json=gauge(3)).status_code == 401

    # the platform provider rotates its signing key: new tokens verify without a restart
    platform.rotate()
    rotated = await platform.client_credentials("service")
    assert call(broker, "POST", E, rotated, json=gauge(4)).status_code == 201

    # who did what is in the audit log
    r = call(broker, "GET", "../../urbanos/v1/audit", admin,
             params={"operation": "create_entity"})
    assert r.status_code == 200, r.text
    records = r.json()
    assert {tuple(x["entityIds"]) for x in records} >= {
        ("urn:ngsi-ld:RiverGauge:1",), ("urn:ngsi-ld:RiverGauge:4",)}
    assert all(x["principal"].startswith(platform.issuer) for x in records)
