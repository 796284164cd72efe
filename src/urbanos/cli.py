"""`urbanos serve | keys | grants | --version`; every serve option also has an URBANOS_*
environment variable.

``serve`` refuses to listen on a non-loopback address without authentication unless told
``--insecure-open`` (then it warns in the log), and serves HTTPS with ``--tls-cert`` and
``--tls-key``. ``keys`` creates, lists and revokes API keys directly in the store named by
``--store``/``URBANOS_STORE`` (whoever can open the store is its administrator);
``grants`` lists, adds and revokes grants there, in the admin API's form.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson

from urbanos import __version__
from urbanos.settings import SETTINGS, Settings

if TYPE_CHECKING:
    from urbanos.core.policy import Principal
    from urbanos.services.access import AccessService

log = logging.getLogger("urbanos")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="urbanos", description="urbanos urban data platform")
    parser.add_argument("--version", action="version", version=f"urbanos {__version__}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the NGSI-LD broker")
    for s in SETTINGS:
        flag = "--" + s.name.replace("_", "-")
        if isinstance(s.default, bool):  # a switch: --insecure-open
            serve.add_argument(flag, dest=s.name, action="store_const", const=True,
                               default=None, help=f"{s.help} (env {s.env})")
            continue
        serve.add_argument(
            flag,
            dest=s.name,
            type=type(s.default),
            default=None,
            help=f"{s.help} (env {s.env}, default {s.default!r})",
        )
    _keys_parser(sub)
    _grants_parser(sub)
    return parser


def _keys_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from urbanos.core.policy import Role

    store_help = "store URL (env URBANOS_STORE, default the serve default)"
    keys = sub.add_parser("keys", help="create, list and revoke API keys")
    keys.add_argument("--store", default=None, help=store_help)
    # also after the verb (``urbanos keys list --store URL``); given there, it wins
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", default=argparse.SUPPRESS, help=store_help)
    verbs = keys.add_subparsers(dest="verb")
    create = verbs.add_parser("create", parents=[common],
                              help="create a key; its token is printed this once")
    create.add_argument("--tenant", default="",
                        help="tenant of the key (default: the default tenant; * the platform)")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--name", required=True, help="who or what uses the key")
    create.add_argument("--expires", default=None, help="expiry date-time (ISO 8601)")
    listing = verbs.add_parser("list", parents=[common],
                               help="list keys (never their secrets) as JSON")
    listing.add_argument("--tenant", default=None, help="only this tenant's keys")
    revoke = verbs.add_parser("revoke", parents=[common],
                              help="revoke a key: it stops working at once")
    revoke.add_argument("id", help="the key id (the part of the token before the dot)")


def _grants_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    store_help = "store URL (env URBANOS_STORE, default the serve default)"
    grants = sub.add_parser("grants", help="list, add and revoke grants (as the admin API)")
    grants.add_argument("--store", default=None, help=store_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", default=argparse.SUPPRESS, help=store_help)
    common.add_argument("--tenant", default="", help="the tenant (default: the default one)")
    verbs = grants.add_subparsers(dest="verb")
    verbs.add_parser("list", parents=[common], help="the tenant's grants as JSON")
    add = verbs.add_parser("add", parents=[common],
                           help="add a grant: JSON as POST /urbanos/v1/grants takes it")
    add.add_argument("grant", help='e.g. {"assignee": "claim:groups=parks", "role": '
                                   '"writer", "target": {"types": ["Park"]}}')
    revoke = verbs.add_parser("revoke", parents=[common], help="revoke a grant")
    revoke.add_argument("id", help="the grant id")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("keys", "grants"):
        if args.verb is None:
            parser.parse_args([args.command, "--help"])
        return _keys(args) if args.command == "keys" else _grants(args)
    if args.command != "serve":
        parser.print_help()
        return 2
    overrides = {s.name: getattr(args, s.name) for s in SETTINGS}
    settings = Settings.from_env(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s",'
        '"message":"%(message)s"}',
        stream=sys.stderr,
    )
    allowed, message = exposure(settings.host, settings.auth, settings.insecure_open)
    if not allowed:
        log.error("%s", message)
        print(f"urbanos: {message}", file=sys.stderr)
        return 2
    if message:
        log.warning("%s", message)
    try:
        cert, key = tls_files(settings.tls_cert, settings.tls_key)
    except ValueError as exc:
        print(f"urbanos: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from urbanos.http.app import create_app

    _collect_less()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=settings.log_level.lower() == "debug",
        http="httptools" if _has("httptools") else "h11",
        loop="uvloop" if _has("uvloop") else "asyncio",
        ssl_certfile=cert,
        ssl_keyfile=key,
    )
    return 0


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the port on this machine: 127.0.0.0/8, ::1 and
    ``localhost``. Any other name may resolve anywhere, and 0.0.0.0 / :: listen on every
    interface: not loopback."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def exposure(host: str, auth: str, insecure_open: bool) -> tuple[bool, str | None]:
    """Whether the broker may start listening on ``host`` with authentication ``auth``,
    and what to say: (False, why) refuses, (True, warning) starts and warns, (True, None)
    starts quietly. Without authentication anyone reaching the port may read and change
    every tenant's data, so that is allowed on a loopback address only, unless the
    operator explicitly accepts it (``--insecure-open``)."""
    if auth.strip().lower() not in ("", "none") or is_loopback(host):
        return True, None
    if not insecure_open:
        return False, (
            f"refusing to listen on {host} without authentication: anyone reaching the port "
            "could read and change every tenant's data. Set URBANOS_AUTH (oidc, apikey), "
            "listen on 127.0.0.1, or pass --insecure-open (URBANOS_INSECURE_OPEN=1) to "
            "accept it"
        )
    return True, (
        f"listening on {host} WITHOUT authentication (--insecure-open): anyone reaching "
        "the port may read and change every tenant's data"
    )


def tls_files(cert: str, key: str) -> tuple[str | None, str | None]:
    """uvicorn's ``ssl_certfile`` and ``ssl_keyfile`` (None, None: plain HTTP); ValueError
    saying what is wrong with them."""
    if not cert and not key:
        return None, None
    if not (cert and key):
        raise ValueError("HTTPS needs both --tls-cert and --tls-key "
                         "(URBANOS_TLS_CERT, URBANOS_TLS_KEY)")
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not os.path.isfile(path):
            raise ValueError(f"{flag} {path}: no such file")
    return cert, key


# -- urbanos keys ----------------------------------------------------------------------
def _keys(args: argparse.Namespace) -> int:
    settings = Settings.from_env(store=args.store)
    verbs: dict[str, Callable[[AccessService], Awaitable[int]]] = {
        "create": lambda access: _create_key(access, args),
        "list": lambda access: _list_keys(access, args.tenant),
        "revoke": lambda access: _revoke_key(access, args.id),
    }
    return asyncio.run(_with_access(settings, verbs[args.verb]))


async def _with_access(settings: Settings, work: Callable[[AccessService], Awaitable[int]],
                       command: str = "keys") -> int:
    from urbanos.errors import NgsiLdError
    from urbanos.services.access import AccessService
    from urbanos.services.stores import open_stores

    stores = open_stores(settings.store, readers=1, synchronous=settings.sqlite_synchronous)
    await stores.open()
    try:
        return await work(AccessService(stores.access))
    except NgsiLdError as exc:
        print(f"urbanos {command}: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        await stores.close()


def _operator() -> Principal:
    """Whoever runs the CLI on the store: no authentication stands between them and it."""
    from urbanos.core.policy import OPEN

    return OPEN


async def _create_key(access: AccessService, args: argparse.Namespace) -> int:
    from urbanos.core.policy import ANY_TENANT, Role
    from urbanos.http.negotiation import tenant_from

    tenant = ANY_TENANT if args.tenant == ANY_TENANT else tenant_from(args.tenant)
    key, token = await access.create_key(_operator(), tenant, Role(args.role), args.name,
                                         args.expires)
    print(token)
    print(f"urbanos keys: created key {key.id} ({key.role.value} in tenant "
          f"{key.tenant!r}); the token above is shown only now", file=sys.stderr)
    return 0


async def _list_keys(access: AccessService, tenant: str | None) -> int:
    keys = await access.list_keys(_operator(), tenant)
    rows = [{"id": k.id, "tenant": k.tenant, "role": k.role.value, "name": k.name,
             "createdAt": k.created_at, "expiresAt": k.expires_at, "revokedAt": k.revoked_at,
             "lastUsedAt": k.last_used_at, "createdBy": k.created_by} for k in keys]
    sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


async def _revoke_key(access: AccessService, key_id: str) -> int:
    await access.revoke_key(_operator(), key_id)
    print(f"urbanos keys: revoked key {key_id}", file=sys.stderr)
    return 0


# -- urbanos grants --------------------------------------------------------------------
def _grants(args: argparse.Namespace) -> int:
    from urbanos.errors import NgsiLdError
    from urbanos.http.negotiation import tenant_from

    settings = Settings.from_env(store=args.store)
    try:
        tenant = tenant_from(args.tenant)
    except NgsiLdError as exc:
        print(f"urbanos grants: {exc.detail}", file=sys.stderr)
        return 2
    verbs: dict[str, Callable[[AccessService], Awaitable[int]]] = {
        "list": lambda access: _list_grants(access, tenant),
        "add": lambda access: _add_grant(access, tenant, args.grant),
        "revoke": lambda access: _revoke_grant(access, tenant, args.id),
    }
    return asyncio.run(_with_access(settings, verbs[args.verb], "grants"))


async def _list_grants(access: AccessService, tenant: str) -> int:
    grants = await access.list_grants(_operator(), tenant)
    sys.stdout.write(orjson.dumps([g.to_json() for g in grants],
                                  option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


async def _add_grant(access: AccessService, tenant: str, text: str) -> int:
    from urbanos.core.grant_input import grant_from_input
    from urbanos.core.jsonld import core_term_map
    from urbanos.errors import BadRequestData
    from urbanos.services.access import new_grant_id

    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRequestData(f"the grant is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequestData("a grant is a JSON object")
    grant = grant_from_input(body, tenant, core_term_map().expand, new_grant_id)
    stored = await access.add_grant(_operator(), grant)
    sys.stdout.write(orjson.dumps(stored.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


async def _revoke_grant(access: AccessService, tenant: str, grant_id: str) -> int:
    await access.delete_grant(_operator(), tenant, grant_id)
    print(f"urbanos grants: revoked {grant_id}", file=sys.stderr)
    return 0


def _collect_less() -> None:
    """Cyclic garbage collection tuned for a server: every request allocates a few hundred
    containers, so the default thresholds ran a collection every few requests and a full one
    every ~400, walking every module, class and cache each time (~7% of a query's CPU).
    What exists once the code is loaded lives as long as the process: it is frozen out of
    the collector's walks, and collections run ~30 times less often."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    raise SystemExit(main())
