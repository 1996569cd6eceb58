"""What the tests ask: the generation path, prompts of their own, bodies the simulator answers
slowly, and the reference text the simulator itself streams (for a prompt or a chat)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from harness.servers import Server

GENERATE = "/v1/chats/generate"


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex}"


def slow(prompt: str, tokens: int = 12, delay: float = 0.1, **options: Any) -> dict[str, Any]:
    """A body the simulator answers with ``tokens`` tokens, ``delay`` seconds apart."""
    return {"prompt": prompt, "options": {"sim_tokens": tokens, "sim_token_delay": delay,
                                          **options}}  # fmt: skip


async def simulator_text(simulator: Server | httpx.AsyncClient, body: dict[str, Any]) -> str:
    """What Ollama (the simulator, a process or in-process) itself streams for ``body``: the
    reference text."""
    if isinstance(simulator, Server):
        async with httpx.AsyncClient(base_url=simulator.url) as direct:
            return await simulator_text(direct, body)
    response = await simulator.post("/api/generate", json={"model": "llama3.2", **body})
    lines = [httpx.Response(200, content=line).json() for line in response.content.splitlines()]
    return "".join(line["response"] for line in lines)


def simulator_chat_text(simulator: Server, body: dict[str, Any]) -> str:
    """What Ollama (the simulator process) itself streams for the chat ``body`` (its
    ``/api/chat`` body: the native request's content less ``kind``): the reference text of a
    chat, read without an event loop, for the SDK modules."""
    response = httpx.post(simulator.url + "/api/chat", json=body, timeout=20)
    response.raise_for_status()
    lines = [httpx.Response(200, content=line).json() for line in response.content.splitlines()]
    return "".join(line["message"]["content"] for line in lines)
