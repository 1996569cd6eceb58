"""The Ollama client: streams a completion as tokens and maps every failure to our errors.

Ollama answers ``/api/generate`` and ``/api/chat`` with NDJSON lines, streamed with the
deadlines and failures of ``app.upstream.streaming``; in-band ``{"error": ...}`` lines are
translated here.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from app.errors import (
    ServiceError,
    UpstreamError,
    UpstreamUnavailable,
)
from app.ops import jsonbytes
from app.upstream.engine import Finished, Kind, Prompt, Relay, Token
from app.upstream.streaming import (
    JSON_HEADERS,
    Timeouts,
    engine_http,
    get_json,
    status_error,
    stream_lines,
    under,
)

_PATHS: dict[Kind, bytes] = {"chat": b"api/chat", "generate": b"api/generate"}
# Final-line fields that are not statistics: the text is already streamed, and `context` is a
# long token array that Ollama deprecates.
_NOT_STATS = frozenset({"response", "message", "thinking", "context", "done"})


class OllamaClient:
    """Talks to one Ollama server over an ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        first_token_timeout_seconds: float,
        idle_timeout_seconds: float,
    ) -> None:
        self._http = http
        self._urls = {kind: under(http, path) for kind, path in _PATHS.items()}
        self._timeouts = Timeouts(first_token_timeout_seconds, idle_timeout_seconds)

    @classmethod
    def connect(
        cls,
        base_url: str,
        *,
        first_token_timeout_seconds: float,
        idle_timeout_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> OllamaClient:
        return cls(
            engine_http(base_url, transport),
            first_token_timeout_seconds=first_token_timeout_seconds,
            idle_timeout_seconds=idle_timeout_seconds,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def generate(self, request: Prompt, emit: Relay) -> None:
        """Streams ``request`` from Ollama into ``emit``, one NDJSON line at a time."""
        chat = request.kind == "chat"
        await stream_lines(
            self._http, self._urls[request.kind], jsonbytes.dumps(request_body(request)),
            engine="Ollama", timeouts=self._timeouts, status_error=_status_error,
            on_line=lambda line: _relay_line(line, chat, emit),
        )  # fmt: skip

    async def models(self) -> list[dict[str, Any]]:
        """The models Ollama has, as ``/api/tags`` lists them."""
        data = await self._get_json("/api/tags")
        models = data.get("models")
        if not isinstance(models, list):
            raise UpstreamError("Ollama's model list has no models array.")
        return models

    async def version(self) -> str:
        return str((await self._get_json("/api/version")).get("version", "unknown"))

    async def running(self) -> list[dict[str, Any]]:
        """The models Ollama holds in memory now, as ``/api/ps`` lists them."""
        models = (await self._get_json("/api/ps")).get("models")
        if not isinstance(models, list):
            raise UpstreamError("Ollama's running models have no models array.")
        return models

    async def show(self, body: dict[str, Any]) -> dict[str, Any]:
        """``/api/show``: a model's details, as Ollama answers them."""
        return await self._get_json("/api/show", body)

    async def embed(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """``/api/embed`` or the legacy ``/api/embeddings``, as Ollama answers them."""
        return await self._get_json(path, body)

    async def count_tokens(self, request: Prompt) -> int | None:
        """Ollama has no tokenizer endpoint."""
        return None

    async def waiting(self) -> int | None:
        """Ollama does not say how many requests it has queued."""
        return None

    async def forward(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
        """Passes a request on as it came (model management); its status, body, media type."""
        try:
            response = await self._http.request(method, path, content=body, headers=JSON_HEADERS)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"Ollama is not reachable: {exc}") from exc
        media = response.headers.get("content-type", "application/json")
        return response.status_code, response.content, media

    async def _get_json(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return await get_json(self._http, path, body, engine="Ollama",
                              status_error=_status_error)  # fmt: skip


def request_body(request: Prompt) -> dict[str, Any]:
    """The request as Ollama's ``/api/generate`` or ``/api/chat`` body: its content, less the
    kind (which is the path), with ``keep_alive``; always streamed, so that the timeouts apply
    between tokens."""
    body = request.content()
    del body["kind"]
    if request.keep_alive is not None:
        body["keep_alive"] = request.keep_alive
    body["stream"] = True
    return body


def _relay_line(line: bytes, chat: bool, emit: Relay) -> bool:
    """Emits what one NDJSON line carries; returns whether it was the final line."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("Ollama sent a line that is not JSON.") from exc
    if not isinstance(data, dict):
        raise UpstreamError("Ollama sent a line that is not a JSON object.")
    if "error" in data:
        raise UpstreamError(f"Ollama reported an error: {data['error']}")
    source = (data.get("message") or {}) if chat else data
    if not isinstance(source, dict):
        raise UpstreamError("Ollama sent a message that is not a JSON object.")
    fields = {
        name: value
        for name, value in (
            ("text", source.get("content" if chat else "response")),
            ("thinking", source.get("thinking")),
            ("tool_calls", source.get("tool_calls")),
        )
        if value
    }
    if fields:
        emit(Token(fields))
    if data.get("done") is True:
        emit(Finished({k: v for k, v in data.items() if k not in _NOT_STATS}))
        return True
    return False


def _status_error(status: int, body: bytes) -> ServiceError:
    """Maps a non-200 answer of Ollama, using its ``{"error": ...}`` text when it has one."""
    try:
        message = str(orjson.loads(body)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = body[:200].decode("utf-8", "replace").strip() or f"status {status}"
    return status_error("Ollama", status, message)
