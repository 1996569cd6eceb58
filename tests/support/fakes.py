"""Fakes of what the app's parts are given: ``ScriptedSource``, a ``TokenSource``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.errors import ServiceError
from app.generations.request import CompletionRequest
from app.upstream.engine import Emit, Finished, Token


@dataclass
class ScriptedSource:
    """A ``TokenSource`` that emits ``texts`` (pausing ``gate`` before each) then finishes or
    raises ``error``; it records each request and whether it was cancelled."""

    texts: Sequence[str] = ("Hel", "lo")
    error: ServiceError | None = None
    gate: asyncio.Event | None = None
    requests: list[CompletionRequest] = field(default_factory=list)
    cancelled: int = 0

    async def generate(self, request: CompletionRequest, emit: Emit, *, client: str = "") -> None:
        self.requests.append(request)
        try:
            for text in self.texts:
                if self.gate is not None:
                    await self.gate.wait()
                    self.gate.clear()
                emit(Token({"text": text}))
            if self.error is not None:
                raise self.error
            emit(Finished({"done_reason": "stop", "eval_count": len(self.texts)}))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
