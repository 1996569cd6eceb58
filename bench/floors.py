"""The floors the bench compares against: the least the same stack can do, each in its own
process on one uvicorn worker (uvloop, httptools), with nothing of the service in it.

- ``hello``: a bare Starlette hello world, no middleware (the floor of any request); with
  ``--limiter`` it counts each request with the service's own limiter (Redis at that URL), and
  with ``--log`` it writes the service's JSON request line: what those two parts of every
  limited request cost on the bare stack.
- ``relay``: a raw ASGI app that relays Ollama's NDJSON from aiohttp as SSE token events, one
  ``http.response.body`` message per token (the floor of relaying a token).
- ``idle``: a raw ASGI app holding idle SSE responses that ping every ``--ping`` seconds and
  listen for the client leaving (the floor of an open stream).

``python -m bench.floors --kind relay --port 8100 --ollama http://127.0.0.1:11434``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
from typing import Any

import aiohttp
import orjson
import redis.asyncio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.access.quotas import Limits, Quotas
from app.ops.logs import uvicorn_config

SSE_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
}


async def hello(request: Request) -> Response:
    return PlainTextResponse("Hello, world!")


def hello_app(limiter_url: str | None, log: bool) -> Any:
    """The hello world with the service's rate-limit check and request log line, as asked."""
    limiter = None
    if limiter_url:
        limiter = Quotas(redis.asyncio.Redis.from_url(limiter_url),
                                       defaults=Limits(requests=10**9),
                                       window_seconds=60)  # fmt: skip
    if log:
        config = uvicorn_config("info", "json")
        config["handlers"]["default"]["stream"] = "ext://sys.stdout"  # the harness's log file
        logging.config.dictConfig(config)
    logger = logging.getLogger("bib.access")
    fields = {"method": "POST", "path": "/", "status": 200, "client": "127.0.0.1",
              "duration_ms": 1.0, "ttft_ms": 1.0, "tokens": 50, "cache": "HIT",
              "generation": "g_" + "x" * 22, "request_id": "0" * 32}  # fmt: skip

    async def counted(request: Request) -> Response:
        if limiter is not None:
            await limiter.check(request.client.host if request.client else "unknown")
        logger.info("request", extra={"fields": fields})
        return PlainTextResponse("Hello, world!")

    return Starlette(routes=[Route("/", counted, methods=["GET", "POST"])])


def relay_app(ollama: str) -> Any:
    session: aiohttp.ClientSession | None = None

    async def relay(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal session
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if session is None:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        request = orjson.loads(body)
        upstream_body = orjson.dumps({"model": "llama3.2", "prompt": request["prompt"]})
        async with session.post(f"{ollama}/api/generate", data=upstream_body) as upstream:
            await send(SSE_START)
            pending, index = b"", 0
            async for chunk in upstream.content.iter_any():
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if not line:
                        continue
                    data = orjson.loads(line)
                    if data.get("done"):
                        done = b"event: done\ndata: {}\n\n"
                        await send({"type": "http.response.body", "body": done})
                        return
                    event = b"id: %d\nevent: token\ndata: %s\n\n" % (
                        index,
                        orjson.dumps({"text": data["response"]}),
                    )
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                    index += 1

    return relay


def idle_app(ping_seconds: float) -> Any:
    async def idle(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send(SSE_START)
        await send({"type": "http.response.body", "body": b": idle\n\n", "more_body": True})
        while True:
            try:
                message = await asyncio.wait_for(receive(), ping_seconds)
            except TimeoutError:
                ping = {"type": "http.response.body", "body": b": ping\n\n", "more_body": True}
                await send(ping)
                continue
            if message["type"] == "http.disconnect":
                return

    return idle


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floors", description=__doc__)
    parser.add_argument("--kind", choices=("hello", "relay", "idle"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ollama", default="http://127.0.0.1:11434")
    parser.add_argument("--ping", type=float, default=2.0, help="seconds between idle pings")
    parser.add_argument("--limiter", help="hello: count requests in the Redis at this URL")
    parser.add_argument("--log", action="store_true", help="hello: log each request")
    args = parser.parse_args()
    app: Any
    if args.kind == "hello" and (args.limiter or args.log):
        app = hello_app(args.limiter, args.log)
    elif args.kind == "hello":
        app = Starlette(routes=[Route("/", hello)])
    elif args.kind == "relay":
        app = relay_app(args.ollama)
    else:
        app = idle_app(args.ping)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
