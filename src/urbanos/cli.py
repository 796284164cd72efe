"""`urbanos serve | --version`; every option also has an URBANOS_* environment variable."""

from __future__ import annotations

import argparse
import gc
import logging
import sys

from urbanos import __version__
from urbanos.settings import SETTINGS, Settings


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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
    )
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
