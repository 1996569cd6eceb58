"""``python -m app``: validates the settings, then serves with uvicorn; ``python -m app keys
...`` manages API keys in the Redis the settings name (``REDIS_URL``).

A bad setting stops start-up here with one line naming the variable, before any worker starts.

    python -m app keys create NAME [--rate-limit N] [--priority batch]
    python -m app keys list
    python -m app keys revoke NAME
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from types import FrameType

import uvicorn

from app.ops.logs import uvicorn_config
from app.settings import BANDS, Settings


def main() -> None:
    try:
        settings = Settings.from_environ(os.environ)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    if sys.argv[1:2] == ["keys"]:
        sys.exit(asyncio.run(_keys(settings, sys.argv[2:])))
    made = _prepare_metrics_directory()
    # uvicorn ends by raising the signal that stopped it again, for its default action (death,
    # or nothing at all for PID 1 in a container); it is raised here first, so that the folder
    # is removed, then again as before
    original = signal.signal(signal.SIGTERM, _stopped)
    stopped = None
    try:
        _serve(settings)
    except _Stopped as exc:
        stopped = exc.signal
    finally:
        if made is not None:  # ours alone: nothing of it outlives the service
            shutil.rmtree(made, ignore_errors=True)
    if stopped is not None:
        signal.signal(stopped, original)
        signal.raise_signal(stopped)


class _Stopped(Exception):
    def __init__(self, received: int) -> None:
        super().__init__(received)
        self.signal = received


def _stopped(received: int, frame: FrameType | None) -> None:
    raise _Stopped(received)


def _serve(settings: Settings) -> None:
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.web_concurrency,
        log_level=settings.log_level,
        log_config=uvicorn_config(settings.log_level, settings.log_format),
        access_log=False,  # app.ops.request_log logs each request, with more to say
        proxy_headers=False,  # the app does it (TrustedProxiesMiddleware: FORWARDED_ALLOW_IPS)
        # httptools with deadlines for a request's head and body; named, not imported, as it
        # imports app.ops.metrics (see _keys)
        http="app.ops.deadlines:DeadlineProtocol",
        # after the app's own drain (SHUTDOWN_GRACE), only stragglers are left to cut off
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
    )


async def _keys(settings: Settings, argv: list[str]) -> int:
    """``keys create|list|revoke``: prints what a person needs; the exit status says how it
    went (1: nothing done)."""
    parser = argparse.ArgumentParser(prog="python -m app keys")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a key; it is printed once, never again")
    create.add_argument("name", type=_key_name)
    for flag, dest, meaning in (
        ("--rate-limit", "rate_limit_max", "requests per RATE_LIMIT_WINDOW (0: none)"),
        ("--token-limit", "token_limit_max", "Ollama's tokens per TOKEN_LIMIT_WINDOW (0: none)"),
        ("--concurrency", "concurrency_limit", "generations running at once (0: no cap)"),
    ):
        create.add_argument(flag, dest=dest, type=_count, help=f"{meaning}, for this key")
    create.add_argument("--priority", choices=BANDS, default=BANDS[0],
                        help="the highest band its generations wait in for a GPU slot")  # fmt: skip
    commands.add_parser("list", help="the keys' names, when they were made, their limits")
    revoke = commands.add_parser("revoke", help="the key stops working within a second")
    revoke.add_argument("name")
    args = parser.parse_args(argv)
    # imported here: they import app.ops.metrics, whose samples must not be placed before
    # _prepare_metrics_directory has said where (app.ops.metrics' docstring)
    from app.access import api_keys
    from app.store.client import connect

    redis = await connect(settings.redis_url)
    try:
        if args.command == "create":
            limits = {k: getattr(args, k) for k in api_keys.LIMITS if getattr(args, k) is not None}
            key = await api_keys.create(redis, args.name, limits, args.priority)
            if key is None:
                print(f"error: a key named {args.name!r} exists", file=sys.stderr)
                return 1
            print(key)
        elif args.command == "list":
            for entry in await api_keys.listed(redis):
                made = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.created))
                shown = " ".join(f"{k}={v}" for k, v in sorted(entry.limits.items()))
                print(f"{entry.name}\t{made} UTC\t{shown or 'defaults'}\t{entry.priority}")
        elif not await api_keys.revoke(redis, args.name):
            print(f"error: no key named {args.name!r}", file=sys.stderr)
            return 1
        return 0
    finally:
        await redis.aclose()


def _count(raw: str) -> int:
    if not raw.isdigit():
        raise argparse.ArgumentTypeError("an integer >= 0")
    return int(raw)


def _key_name(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", raw):
        raise argparse.ArgumentTypeError("letters, digits and . _ @ - (at most 64)")
    return raw


def _prepare_metrics_directory() -> str | None:
    """Where workers keep their metric samples: given (emptied of a former run's), or made;
    returns the folder it made, for the caller to remove when the service stops."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = given or tempfile.mkdtemp(prefix="bib-metrics-")
    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.remove(stale)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    return None if given else directory


if __name__ == "__main__":
    main()
