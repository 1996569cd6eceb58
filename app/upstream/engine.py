"""What an engine is asked and what it answers: the seam between the use case and the engines.

An engine (``app.upstream.ollama``, behind ``app.upstream.hosts``) reads a generation request
through ``Prompt``, the little it needs of one, so that the request itself stays the use case's
(``app.generations.request``) and satisfies it without knowing it. It answers by emitting
chunks: ``Token`` for each piece of the answer, one ``Finished`` at the end, while the
generation waits for a GPU slot ``Queued`` with its place in line, and ``Placed`` with the host
that took it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Kind = Literal["generate", "chat"]  # a prompt to continue, or messages to answer


class Prompt(Protocol):
    """What an engine reads of a generation request."""

    @property
    def model(self) -> str: ...
    @property
    def kind(self) -> Kind: ...
    @property
    def keep_alive(self) -> str | float | None: ...
    @property
    def band(self) -> str:
        """Its priority band in the GPU queue (``app.settings.BANDS``)."""

    @property
    def session(self) -> str | None:
        """The conversation its client named, for affinity (``app.upstream.affinity``)."""

    def content(self) -> dict[str, Any]:
        """What decides the answer: ``kind``, ``model``, and ``prompt`` or ``messages``, with
        ``system``, ``options``, ``format``, ``think`` and ``tools`` where they are set."""


@dataclass(frozen=True, slots=True)
class Token:
    """One upstream chunk worth sending: any of ``text``, ``thinking``, ``tool_calls``."""

    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Finished:
    """The engine said it is done; ``stats`` holds ``done_reason``, counts and durations."""

    stats: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Queued:
    """The generation waits for a GPU slot: ``position`` generations will start before it."""

    position: int


@dataclass(frozen=True, slots=True)
class Placed:
    """The generation runs on ``host`` (its URL, shown without credentials), which speaks
    ``engine`` (``app.settings.ENGINES``)."""

    host: str
    engine: str = "ollama"


class EngineClient(Protocol):
    """One engine server's client (``app.upstream.ollama``, ``app.upstream.openai``): its
    answers in Ollama's shapes, whatever the engine speaks."""

    async def generate(self, request: Prompt, emit: Relay) -> None: ...
    async def models(self) -> list[dict[str, Any]]: ...
    async def version(self) -> str: ...
    async def running(self) -> list[dict[str, Any]]: ...
    async def show(self, body: dict[str, Any]) -> dict[str, Any]: ...
    async def embed(self, path: str, body: dict[str, Any]) -> dict[str, Any]: ...
    async def count_tokens(self, request: Prompt) -> int | None: ...
    async def waiting(self) -> int | None: ...
    async def forward(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str]: ...
    async def aclose(self) -> None: ...


Emit = Callable[[Token | Finished | Queued | Placed], None]  # what a generation's source emits
Relay = Callable[[Token | Finished], None]  # what one host's stream emits
