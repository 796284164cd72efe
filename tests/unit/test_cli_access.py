"""The CLI's access commands: the decision to listen without authentication, the TLS
files, and ``urbanos keys create | list | revoke`` on a real SQLite file (the keys then
verify, or are refused, through the access service)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from urbanos import cli
from urbanos.core.policy import Role
from urbanos.errors import Unauthorized
from urbanos.services.access import AccessService
from urbanos.services.stores import open_stores


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost",
                                  "LOCALHOST", "api.localhost"])
def test_loopback_addresses(host: str) -> None:
    assert cli.is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1",
                                  "broker.example.org", "", "127.0.0.1.example.org"])
def test_other_addresses_are_not_loopback(host: str) -> None:
    assert not cli.is_loopback(host)


@pytest.mark.parametrize("auth", ["", "none", "NONE", " none "])
def test_no_authentication_on_loopback_starts_quietly(auth: str) -> None:
    assert cli.exposure("127.0.0.1", auth, insecure_open=False) == (True, None)


@pytest.mark.parametrize("auth", ["", "none"])
def test_no_authentication_elsewhere_is_refused_unless_insecure_open(auth: str) -> None:
    allowed, message = cli.exposure("0.0.0.0", auth, insecure_open=False)
    assert not allowed
    assert message is not None and "--insecure-open" in message and "0.0.0.0" in message
    allowed, message = cli.exposure("0.0.0.0", auth, insecure_open=True)
    assert allowed
    assert message is not None and "WITHOUT authentication" in message


@pytest.mark.parametrize("auth", ["oidc", "apikey", "oidc,apikey"])
def test_with_authentication_any_address_starts_quietly(auth: str) -> None:
    assert cli.exposure("0.0.0.0", auth, insecure_open=False) == (True, None)


def test_tls_needs_both_files_and_existing_ones(tmp_path: Path) -> None:
    assert cli.tls_files("", "") == (None, None)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    assert cli.tls_files(str(cert), str(key)) == (str(cert), str(key))
    with pytest.raises(ValueError, match="both --tls-cert and --tls-key"):
        cli.tls_files(str(cert), "")
    with pytest.raises(ValueError, match="both"):
        cli.tls_files("", str(key))
    with pytest.raises(ValueError, match="--tls-key .*missing.pem: no such file"):
        cli.tls_files(str(cert), str(tmp_path / "missing.pem"))


def test_serve_refuses_an_open_port_before_starting(capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("URBANOS_AUTH", raising=False)
    monkeypatch.delenv("URBANOS_INSECURE_OPEN", raising=False)
    assert cli.main(["serve", "--host", "0.0.0.0", "--store", "memory://"]) != 0
    assert "refusing to listen on 0.0.0.0" in capsys.readouterr().err


def test_serve_refuses_half_a_tls_configuration(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("cert")
    assert cli.main(["serve", "--store", "memory://", "--tls-cert", str(cert)]) != 0
    assert "--tls-key" in capsys.readouterr().err


# -- urbanos keys ----------------------------------------------------------------------
def keys(capsys: pytest.CaptureFixture[str], store: str, *args: str) -> tuple[int, str, str]:
    code = cli.main(["keys", "--store", store, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


async def verify(store: str, token: str) -> tuple[str, Role] | str:
    """What the broker would make of ``token``: the key's (tenant, role) or the refusal."""
    stores = open_stores(store, readers=1)
    await stores.open()
    try:
        key = await AccessService(stores.access).verify_key(token)
        return key.tenant, key.role
    except Unauthorized as exc:
        return exc.detail
    finally:
        await stores.close()


def test_keys_create_list_revoke_on_a_sqlite_file(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/urbanos.db"
    code, out, err = keys(capsys, store, "create", "--tenant", "city", "--role", "writer",
                          "--name", "parking sensors", "--expires", "2099-01-01T00:00:00Z")
    assert code == 0
    token = out.strip()
    assert token.startswith("uk_") and "\n" not in token
    key_id = token.removeprefix("uk_").split(".")[0]
    assert key_id in err and "shown only now" in err
    assert asyncio.run(verify(store, token)) == ("city", Role.WRITER)

    code, out, _ = keys(capsys, store, "create", "--role", "reader", "--name", "dashboard")
    assert code == 0
    other = out.strip()

    code, out, _ = keys(capsys, store, "list")
    assert code == 0
    listed = orjson.loads(out)
    assert {(k["tenant"], k["role"], k["name"]) for k in listed} == {
        ("city", "writer", "parking sensors"), ("", "reader", "dashboard")}
    assert token.split(".")[1] not in out and other.split(".")[1] not in out  # no secrets
    mine = next(k for k in listed if k["id"] == key_id)
    assert mine["expiresAt"] == "2099-01-01T00:00:00.000Z" and mine["revokedAt"] is None

    code, out, _ = keys(capsys, store, "list", "--tenant", "city")
    assert [k["id"] for k in orjson.loads(out)] == [key_id]
    # --store after the verb works too (and wins over one before it)
    assert cli.main(["keys", "--store", "memory://", "list", "--store", store]) == 0
    assert len(orjson.loads(capsys.readouterr().out)) == 2

    code, _, err = keys(capsys, store, "revoke", key_id)
    assert code == 0 and key_id in err
    assert asyncio.run(verify(store, token)) == "API key revoked"
    assert asyncio.run(verify(store, other)) == ("", Role.READER)  # the other one still works
    code, out, _ = keys(capsys, store, "list", "--tenant", "city")
    assert orjson.loads(out)[0]["revokedAt"] is not None


def test_keys_refuses_bad_input_with_a_message(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/urbanos.db"
    code, _, err = keys(capsys, store, "revoke", "AAAAAAAAAAAAAAAA")
    assert code == 1 and "not found" in err
    code, _, err = keys(capsys, store, "create", "--role", "reader", "--name", "x",
                        "--expires", "yesterday")
    assert code == 1 and "expiresAt 'yesterday' is not a date-time" in err
    code, _, err = keys(capsys, store, "create", "--role", "reader", "--name", "x",
                        "--expires", "2001-01-01T00:00:00Z")
    assert code == 1 and "in the past" in err
    code, _, err = keys(capsys, store, "create", "--tenant", "no spaces", "--role", "reader",
                        "--name", "x")
    assert code == 1 and "invalid NGSILD-Tenant 'no spaces'" in err
    code, out, _ = keys(capsys, store, "create", "--tenant", "*", "--role", "platformAdmin",
                        "--name", "operations")
    assert code == 0 and asyncio.run(verify(store, out.strip())) == ("*", Role.PLATFORM_ADMIN)
    with pytest.raises(SystemExit) as exit_:
        keys(capsys, store, "create", "--role", "mayor", "--name", "x")
    assert exit_.value.code != 0
    code, out, _ = keys(capsys, store, "list")
    assert code == 0 and [k["name"] for k in orjson.loads(out)] == ["operations"]


def test_grants_add_list_revoke_on_a_sqlite_file(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/city.db"
    body = ('{"id": "urn:ngsi-ld:Permission:parks", "assignee": "claim:groups=parks", '
            '"role": "writer", "target": {"types": ["Park"], "hidden": ["phone"]}}')
    assert cli.main(["grants", "--store", store, "add", "--tenant", "osaka", body]) == 0
    added = orjson.loads(capsys.readouterr().out)
    assert added["target"] == {
        "types": ["https://uri.etsi.org/ngsi-ld/default-context/Park"],
        "hidden": ["https://uri.etsi.org/ngsi-ld/default-context/phone"]}
    assert added["actions"] == ["read", "write"] and added["tenant"] == "osaka"
    assert cli.main(["grants", "--store", store, "list", "--tenant", "osaka"]) == 0
    assert [g["id"] for g in orjson.loads(capsys.readouterr().out)] == [added["id"]]
    assert cli.main(["grants", "--store", store, "list"]) == 0
    assert orjson.loads(capsys.readouterr().out) == []  # another tenant's
    assert cli.main(["grants", "--store", store, "revoke", "--tenant", "osaka",
                     added["id"]]) == 0
    capsys.readouterr()
    assert cli.main(["grants", "--store", store, "list", "--tenant", "osaka"]) == 0
    assert orjson.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize("body", ['{"assignee": "nobody:x", "role": "reader"}',
                                  '{"assignee": "public", "role": "owner"}',
                                  '{"assignee": "public", "role": "reader", "target": 5}',
                                  "not json", "[]"])
def test_grants_add_refuses_bad_grants_with_a_message(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path, body: str) -> None:
    store = f"sqlite:///{tmp_path}/city.db"
    assert cli.main(["grants", "--store", store, "add", body]) == 1
    assert capsys.readouterr().err.startswith("urbanos grants: ")
    assert cli.main(["grants", "--store", store, "list"]) == 0
    assert orjson.loads(capsys.readouterr().out) == []
