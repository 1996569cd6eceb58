"""The real app in-process: its lifespan included, behind an ``httpx.ASGITransport``, with the
simulator at its upstream transport seam: no sockets but Redis's, milliseconds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import httpx
from starlette.types import Receive, Scope, Send

from app.lifespan import State
from app.main import create_app
from app.settings import Settings
from simulator.app import Behaviour
from simulator.app import create_app as create_simulator


@dataclass
class InProcess:
    """The app of ``in_process``; ``client(ip)`` speaks to it as the client at ``ip``."""

    state: State
    asgi: Callable[[Scope, Receive, Send], Any]
    simulator: httpx.AsyncClient  # the in-process simulator, to read its counters

    def client(self, ip: str = "203.0.113.9", **headers: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.asgi, client=(ip, 50000))
        return httpx.AsyncClient(transport=transport, base_url="http://bib.test", headers=headers)

    async def simulator_counters(self) -> dict[str, int]:
        counters: dict[str, int] = (await self.simulator.get("/_sim/counters")).json()
        return counters


@asynccontextmanager
async def in_process(
    env: dict[str, str], *, upstream: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[InProcess]:
    """The real app, lifespan included, on the settings ``env`` gives, with no sockets but
    Redis's: Ollama is the simulator (12 tokens, no delay) behind an ``httpx.ASGITransport``,
    unless ``upstream`` is another transport. Both test clients buffer whole bodies, so nothing
    here can show tokens arriving one by one: that needs a real server."""
    simulator = create_simulator(Behaviour(tokens=12, token_delay=0))
    app = create_app(
        Settings.from_environ(env),
        upstream_transport=upstream or httpx.ASGITransport(app=simulator),
    )
    async with app.router.lifespan_context(app) as state:

        async def served(scope: Scope, receive: Receive, send: Send) -> None:
            scope["state"] = dict(state or {})  # what a server does with the lifespan's state
            await app(scope, receive, send)

        sim = httpx.AsyncClient(transport=httpx.ASGITransport(app=simulator), base_url="http://o")
        async with sim:
            yield InProcess(cast(State, state), served, sim)
