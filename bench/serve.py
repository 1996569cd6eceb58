"""Serves the app on one uvicorn worker with a chosen Ollama transport, for benchmarks only."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from app.main import create_app
from app.settings import Settings
from app.streams import EventStream

IDLE_PING_SECONDS = 2  # as the capacity bench's HEARTBEAT_INTERVAL


async def hello(request: Request) -> Response:
    return PlainTextResponse("Hello, world!")


async def idle_stream(request: Request) -> Response:
    """The floor of an open stream: the same SSE response, pinging, with nothing to relay."""

    async def nothing() -> AsyncIterator[bytes]:
        yield b": idle\n\n"
        await asyncio.Event().wait()

    return EventStream(nothing(), ping=IDLE_PING_SECONDS, sep="\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transport", choices=("aiohttp", "httpx"), default="aiohttp")
    args = parser.parse_args()
    settings = Settings.from_environ(os.environ)
    transport = None  # None is the production choice: httpx over aiohttp
    if args.transport == "httpx":
        transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=None))
    app = create_app(settings, ollama_transport=transport)
    app.add_route("/hello", hello)  # the baseline: the same server stack doing nothing
    app.add_route("/idle", idle_stream, methods=["POST"])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
