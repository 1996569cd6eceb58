"""Requests to an engine, with their failures mapped: its HTTP client, one request streamed line
by line, with its deadlines, and one answered with a JSON object.

The HTTP client is httpx over aiohttp's transport, which relays a token for about a third of
the CPU of httpx's own transport; tests pass any httpx transport instead.

Engines send their status line only with the first token, after any model load. So the
first-token deadline (``UPSTREAM_TIMEOUT``) covers connecting, loading and the first token,
and from then on each line must come within ``UPSTREAM_IDLE_TIMEOUT``. Both are one deadline
that moves with each line (``Deadline``), at the cost of a comparison: a timeout per read, or a
cancel scope whose deadline moves, sets a timer again for every token. Transport errors and
non-200 statuses (body read first) are translated here, once, for every engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from app.errors import (
    InvalidRequest,
    ModelNotFound,
    ServiceError,
    UpstreamError,
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from app.ops import tracing

CONNECT_TIMEOUT_SECONDS = 5.0
# an idle connection is dropped before the engine's server drops it: uvicorn (vLLM, SGLang)
# closes one after 5 s, and reusing it as it closes fails the request before its first byte
# (a bench run's "Can not write request body", after 5 s without generations); aiohttp's
# default keeps one 15 s
KEEPALIVE_SECONDS = 4.0
JSON_HEADERS = {"content-type": "application/json"}


def engine_http(base_url: str, transport: httpx.AsyncBaseTransport | None = None,
                headers: dict[str, str] | None = None) -> httpx.AsyncClient:  # fmt: skip
    """The HTTP client of one engine server: no timeout but connecting's (the deadlines of a
    stream are ``stream_lines``'), and ``aiohttp_transport`` unless a test gives another."""
    timeout = httpx.Timeout(None, connect=CONNECT_TIMEOUT_SECONDS)
    return httpx.AsyncClient(base_url=base_url, transport=transport or aiohttp_transport(),
                             headers=headers, timeout=timeout)  # fmt: skip


def aiohttp_transport() -> httpx.AsyncBaseTransport:
    """The production transport: no connection cap (each open stream holds one connection)."""

    def session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_SECONDS),
            timeout=aiohttp.ClientTimeout(total=None),
        )

    transport: httpx.AsyncBaseTransport = AiohttpTransport(client=session)
    return transport


def under(http: httpx.AsyncClient, path: bytes) -> httpx.URL:
    """``path`` under the client's base URL, parsed once: httpx parses a URL string with
    regular expressions on every request, some 8% of a relayed request's CPU (py-spy). The
    base URL ends with "/", and a path under it stays there, as httpx merges it."""
    base = http.base_url
    return base.copy_with(raw_path=base.raw_path + path)


@dataclass(frozen=True, slots=True)
class Timeouts:
    first_token_seconds: float  # UPSTREAM_TIMEOUT
    idle_seconds: float  # UPSTREAM_IDLE_TIMEOUT


async def stream_lines(
    http: httpx.AsyncClient,
    url: httpx.URL,
    body: bytes,
    *,
    engine: str,
    timeouts: Timeouts,
    on_line: Callable[[bytes], bool],
    status_error: Callable[[int, bytes], ServiceError],
    headers: dict[str, str] = JSON_HEADERS,
) -> None:
    """POSTs ``body`` and hands each non-blank line to ``on_line`` until it returns ``True``
    (the engine's last line); ``engine`` names the engine in errors."""
    started = False
    clock = asyncio.get_running_loop().time
    deadline = Deadline(timeouts.first_token_seconds)
    if traced := tracing.outgoing():  # the generation's span, continued by a traced engine
        headers = {**headers, **traced}
    try:
        async with http.stream("POST", url, content=body, headers=headers) as response:
            if response.status_code != 200:
                raise status_error(response.status_code, await response.aread())
            started = True
            pending = b""
            async for chunk in response.aiter_raw():
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if line.strip() and on_line(line):
                        return
                if lines:
                    deadline.move(clock() + timeouts.idle_seconds)
            if pending.strip() and on_line(pending):
                return
            raise UpstreamError(f"{engine} ended the stream before it was done.")
    except httpx.HTTPError as exc:
        if started:
            raise UpstreamFailed(f"{engine} dropped the connection mid-stream.") from exc
        raise UpstreamUnavailable(f"{engine} is not reachable: {exc}") from exc
    except asyncio.CancelledError:
        if not deadline.expired or deadline.task.uncancel() > 0:
            raise  # not the deadline's, or not only: the generation was stopped
        if started:
            raise UpstreamTimeout(
                f"{engine} sent nothing for {timeouts.idle_seconds:g} seconds."
            ) from None
        raise UpstreamTimeout(
            f"{engine} sent no first token within {timeouts.first_token_seconds:g} seconds."
        ) from None
    finally:
        deadline.cancel()


async def get_json(
    http: httpx.AsyncClient,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    engine: str,
    status_error: Callable[[int, bytes], ServiceError],
) -> dict[str, Any]:
    """A JSON object from ``path`` (``POST`` with ``body`` when given, else ``GET``)."""
    try:
        if body is None:
            response = await http.get(path)
        else:
            response = await http.post(path, content=orjson.dumps(body), headers=JSON_HEADERS)
    except httpx.HTTPError as exc:
        raise UpstreamUnavailable(f"{engine} is not reachable: {exc}") from exc
    if response.status_code != 200:
        raise status_error(response.status_code, response.content)
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"{engine}'s {path} answer is not JSON.") from exc
    if not isinstance(data, dict):
        raise UpstreamError(f"{engine}'s {path} answer is not a JSON object.")
    return data


def status_error(engine: str, status: int, message: str) -> ServiceError:
    """An engine's non-200 answer as ours, with the engine's own words: an unknown model, a
    refusal, busy (which ejects the host for a while), a failure."""
    if status == 404:
        return ModelNotFound(f"{engine} does not know this model: {message}")
    if status in (400, 422):
        return InvalidRequest(f"{engine} refused the request: {message}")
    if status in (429, 503):
        return UpstreamUnavailable(f"{engine} is busy: {message}")
    if status >= 500:
        return UpstreamFailed(f"{engine} answered {status}: {message}")
    return UpstreamError(f"{engine} answered {status}: {message}")


class Deadline:
    """Cancels the current task once the time passes ``at`` (``move`` sets it) with one timer,
    set again only when it fires before a later ``at`` or when ``at`` comes sooner: moving it
    later, as every line does, costs a comparison."""

    def __init__(self, seconds: float) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.expired = False
        self.at = self._loop.time() + seconds
        self._timer = self._loop.call_at(self.at, self._fire)
        self._armed = self.at

    def move(self, at: float) -> None:
        self.at = at
        if at < self._armed:
            self._timer.cancel()
            self._timer, self._armed = self._loop.call_at(at, self._fire), at

    def _fire(self) -> None:
        if self._loop.time() < self.at:
            self._timer, self._armed = self._loop.call_at(self.at, self._fire), self.at
        else:
            self.expired = True
            self.task.cancel()

    def cancel(self) -> None:
        self._timer.cancel()
