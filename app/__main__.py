"""``python -m app``: validates the settings, then serves with uvicorn; ``python -m app keys
...`` manages API keys in the Redis the settings name (``REDIS_URL``).

A bad setting stops start-up here with one line naming the variable, before any worker starts.

    python -m app keys create NAME [--rate-limit N] [--priority batch] [--models 'llama3.2,qwen3:*']
                                   [--aliases gpt-4o=llama3.2] [--expires 30d] [--note TEXT]
    python -m app keys update NAME [the same options: only those given change]
    python -m app keys list
    python -m app keys revoke NAME
    python -m app keys usage [NAME] [--start YYYY-MM-DD] [--end YYYY-MM-DD]
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
from typing import TYPE_CHECKING, Any

import uvicorn

from app.ops.logs import uvicorn_config
from app.settings import BANDS, Settings, model_aliases, model_patterns

if TYPE_CHECKING:
    from app.store.client import RedisClient


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
    """``keys create|update|list|revoke|usage``: prints what a person needs; the exit status
    says how it went (1: nothing done)."""
    parser = argparse.ArgumentParser(prog="python -m app keys")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a key; it is printed once, never again")
    create.add_argument("name", type=_key_name)
    _key_options(create)
    update = commands.add_parser("update", help="change a key's options; the key stays, every "
                                 "replica serves the change within a second")  # fmt: skip
    update.add_argument("name")
    _key_options(update)
    commands.add_parser("list", help="the keys' names, when they were made, their options, "
                        "when they expire, when they were last used, their notes")  # fmt: skip
    revoke = commands.add_parser("revoke", help="the key stops working within a second")
    revoke.add_argument("name")
    usage = commands.add_parser("usage", help="what each key used, by UTC day; with NAME, that "
                                "key's per model and per day too")  # fmt: skip
    usage.add_argument("name", nargs="?")
    usage.add_argument("--start", help="the first day, YYYY-MM-DD (default: six days before end)")
    usage.add_argument("--end", help="the last day, YYYY-MM-DD (default: today)")
    args = parser.parse_args(argv)
    # imported here: they import app.ops.metrics, whose samples must not be placed before
    # _prepare_metrics_directory has said where (app.ops.metrics' docstring)
    from app.access import api_keys
    from app.store.client import connect

    redis = await connect(settings.redis_url)
    try:
        given = {k: getattr(args, k, None) for k in api_keys.LIMITS}
        limits = {k: v for k, v in given.items() if v is not None}
        if args.command == "create":
            key = await api_keys.create(redis, args.name, **_changes(args, limits))
            if key is None:
                print(f"error: a key named {args.name!r} exists", file=sys.stderr)
                return 1
            print(key)
        elif args.command == "update":
            if not await api_keys.update(redis, args.name, **_changes(args, limits)):
                print(f"error: no key named {args.name!r}", file=sys.stderr)
                return 1
        elif args.command == "list":
            for entry in await api_keys.listed(redis):
                shown = " ".join(f"{k}={v}" for k, v in sorted(entry.limits.items()))
                models = ",".join(entry.models) or "all models"
                aliases = ",".join(f"{k}={v}" for k, v in sorted(entry.aliases.items()))
                if aliases:
                    models += f" aliases {aliases}"
                print("\t".join((entry.name, _when(entry.created), shown or "defaults",
                                 entry.priority, models, "expires " + _when(entry.expires),
                                 "used " + _when(entry.used), entry.note)))  # fmt: skip
        elif args.command == "usage":
            return await _usage(redis, settings, args.name, args.start, args.end)
        elif not await api_keys.revoke(redis, args.name):
            print(f"error: no key named {args.name!r}", file=sys.stderr)
            return 1
        return 0
    finally:
        await redis.aclose()


async def _usage(redis: RedisClient, settings: Settings, name: str | None, start: str | None,
                 end: str | None) -> int:  # fmt: skip
    """``keys usage``: a line a key, its name, ``all`` and its totals (``GET /v1/usage``'s);
    with ``name``, then one for each model (``model=M``) and each day (``day=D``) of that key."""
    from app.access import api_keys
    from app.access.identity import key_client
    from app.store.client import RedisUnavailable
    from app.store.usage import BadWindow, Counts, Usage, window

    recorded = Usage(redis, retention_days=settings.usage_retention_days)
    try:
        first, last = window(start, end, today=recorded.today(),
                             retention_days=recorded.retention_days)  # fmt: skip
    except BadWindow as exc:
        wrong = "; ".join(f"--{field} {why}" for field, why in exc.problems.items())
        print(f"error: {wrong}", file=sys.stderr)
        return 1
    names = [entry.name for entry in await api_keys.listed(redis)]
    if name is not None and name not in names:
        print(f"error: no key named {name!r}", file=sys.stderr)
        return 1

    def line(key: str, part: str, counts: Counts) -> str:
        return "\t".join((key, part, " ".join(f"{k}={v}" for k, v in counts.as_dict().items())))

    try:
        for key in [name] if name is not None else names:
            report = await recorded.report(key_client(key), first, last)
            print(line(key, "all", report.totals))
            if name is not None:
                for model, counts in report.by_model.items():
                    print(line(key, f"model={model}", counts))
                for day, counts in report.by_day.items():
                    print(line(key, f"day={day}", counts))
    except RedisUnavailable as exc:
        print(f"error: Redis did not answer: {exc}", file=sys.stderr)
        return 1
    return 0


def _key_options(parser: argparse.ArgumentParser) -> None:
    """What ``create`` sets and ``update`` changes (left out: as it was, or the default)."""
    for flag, dest, meaning in (
        ("--rate-limit", "rate_limit_max", "requests per RATE_LIMIT_WINDOW (0: none)"),
        ("--token-limit", "token_limit_max", "Ollama's tokens per TOKEN_LIMIT_WINDOW (0: none)"),
        ("--concurrency", "concurrency_limit", "generations running at once (0: no cap)"),
    ):
        parser.add_argument(flag, dest=dest, type=_count, help=f"{meaning}, for this key")
    parser.add_argument("--priority", choices=BANDS,
                        help="the highest band its generations wait in for a GPU slot")  # fmt: skip
    parser.add_argument("--models", type=model_patterns,
                        help="the models it may use: names or patterns, comma-separated "
                        "('llama3.2,qwen3:*'); '': every model")  # fmt: skip
    parser.add_argument("--aliases", type=model_aliases,
                        help="its own alias=model pairs, over MODEL_ALIASES; '': none")  # fmt: skip
    parser.add_argument("--expires", type=_lifetime,
                        help="when it stops: 30d, 12h, 90m, 45s from now; never")  # fmt: skip
    parser.add_argument("--note", help="what it is for, shown by list")


def _changes(args: argparse.Namespace, limits: dict[str, int]) -> dict[str, Any]:
    """The record's fields the options give."""
    changes: dict[str, Any] = {"limits": limits}
    if args.priority is not None:
        changes["priority"] = args.priority
    if args.models is not None:
        changes["models"] = args.models
    if args.aliases is not None:
        changes["aliases"] = dict(args.aliases)
    if args.expires is not None:
        changes["expires"] = None if args.expires == 0 else time.time() + args.expires
    if args.note is not None:
        changes["note"] = args.note
    return changes


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _lifetime(raw: str) -> float:
    """Seconds from ``30d``, ``12h``, ``90m`` or ``45s``; 0 for ``never``."""
    if raw == "never":
        return 0
    if not re.fullmatch(r"[1-9][0-9]*[smhd]", raw):
        raise argparse.ArgumentTypeError("a number with s, m, h or d (30d), or never")
    return int(raw[:-1]) * _UNITS[raw[-1]]


def _when(moment: float | None) -> str:
    if moment is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))


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
