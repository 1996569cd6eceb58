"""Where a request's generation waits and runs, and what of its prompt the engine reads: its
priority band, the conversation it belongs to, and, with ``STRIP_VOLATILE_PROMPT``, its prompt
without the lines that change on every request.

Band (``app.settings.BANDS``, ``app.upstream.fair_queue``): the lowest of its key's band
(``python -m app keys create … --priority batch``; a request without a key:
``ANONYMOUS_PRIORITY``), the ``X-Priority`` header and what its body asks (OpenAI's
``service_tier: "flex"``). So a client may always lower its own band, and never raise it above
its key's.

Session (``app.upstream.affinity``): what its body names (OpenAI's ``prompt_cache_key``), else
the first of ``SESSION_HEADERS`` it sends (``X-Session-ID``; Claude Code's
``X-Claude-Code-Session-Id``; Codex's ``session_id``).

Volatile lines: Claude Code starts its system prompt with a billing line
(``x-anthropic-billing-header: cc_version=…; cch=<hash>;``) that differs on every request, so no
two requests share a prefix and no engine's prompt cache, nor ours, ever hits. The setting takes
such lines out of the system prompt before the engine sees it and before the content key is
computed: the same question is then one cache entry, and a conversation's turns share their
prefix. Off by default, since it changes what the model is given.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from starlette.datastructures import Headers

from app.access.identity import Identity
from app.errors import Unsupported
from app.generations.request import CompletionRequest
from app.settings import BANDS, Settings
from app.upstream.affinity import SESSION_HEADERS

PRIORITY_HEADER = "x-priority"
VOLATILE = re.compile(r"^x-anthropic-billing-header:[^\n]*\n*", re.MULTILINE)


def placed(completion: CompletionRequest, headers: Headers, asking: Identity,
           settings: Settings) -> CompletionRequest:  # fmt: skip
    """``completion`` with its band and session decided, and its volatile lines out if asked."""
    asked = headers.get(PRIORITY_HEADER, completion.band)
    if asked not in BANDS:
        raise Unsupported(f"X-Priority must be {' or '.join(BANDS)}.", "X-Priority")
    ceiling = settings.anonymous_priority if asking.key is None else asking.key.priority
    band = max(ceiling, asked, completion.band, key=BANDS.index)
    session = completion.session or next(
        (headers[name] for name in SESSION_HEADERS if headers.get(name)), None
    )
    if settings.strip_volatile_prompt:
        completion = stable(completion)
    return replace(completion, band=band, session=session)


def stable(completion: CompletionRequest) -> CompletionRequest:
    """``completion`` without volatile lines in its system prompt or system messages."""

    def steady(message: dict[str, Any]) -> dict[str, Any]:
        if message.get("role") != "system" or not isinstance(message.get("content"), str):
            return message
        return {**message, "content": VOLATILE.sub("", message["content"])}

    system = None if completion.system is None else VOLATILE.sub("", completion.system)
    messages = completion.messages
    if messages is not None:
        messages = tuple(steady(message) for message in messages)
    return replace(completion, system=system, messages=messages)
