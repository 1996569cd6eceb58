"""Conversation affinity: a generation goes to the host that served its prompt's longest known
prefix, whose engine still holds that prefix's key-value cache, so it reads only the new tokens.

The index lives in Redis, shared by every worker and replica. A prompt is read as one text in
the order engines read it (model, system prompt, tools, then each message), cut into chunks of
``CHUNK_CHARACTERS`` (about 256 tokens; the last, partial chunk is not indexed); the key of the
n-th chunk is the SHA-256 of the text up to its end, so it depends on every chunk before it.
Each key names the host that last served a prompt with that prefix and expires after
``AFFINITY_TTL`` seconds; one round trip reads a prompt's whole chain, and the longest match
wins. A session key a client sends (``SESSION_HEADERS``) is a key of its own, and wins over any
prefix: the conversation is pinned where it began. Only the first ``MAX_CHUNKS`` chunks are
indexed: a longer prompt's identity is settled by then.

Entries carry their host's epoch, which goes up when a worker ejects the host: a host that
failed loses its entries on every replica at once (its engine may have restarted with an empty
cache), and a host no longer configured is no candidate. The preferred host is taken unless it
is more than ``AFFINITY_SPILL`` generations busier than the least busy candidate (in flight,
plus what its engine says it has waiting), or, with slots, has none free while another host
does: affinity never piles a hot conversation onto one GPU while others idle. With Redis down
every generation goes to the least busy host.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from app.ops import metrics
from app.store import keys
from app.store.client import Guarded, RedisClient
from app.store.pipeline import SharedPipeline
from app.upstream.engine import Prompt

CHUNK_CHARACTERS = 1024
MAX_CHUNKS = 128
# the headers a client names its conversation with: ours, Claude Code's, Codex's
SESSION_HEADERS = ("x-session-id", "x-claude-code-session-id", "session_id")
Outcome = Literal["hit", "miss", "spill"]


def prompt_text(request: Prompt) -> str:
    """The prompt as one text, in the order an engine reads it: each turn of a conversation
    extends the text of the turn before."""
    content = request.content()
    parts = [content["model"], content.get("system") or ""]
    if content.get("tools"):
        parts.append(orjson.dumps(content["tools"], option=orjson.OPT_SORT_KEYS).decode())
    if "messages" in content:
        parts += (
            orjson.dumps(m, option=orjson.OPT_SORT_KEYS).decode() for m in content["messages"]
        )
    else:
        parts.append(str(content.get("prompt") or ""))
    return "\n".join(parts)


def chain(request: Prompt) -> list[str]:
    """The index keys of the prompt's leading chunks, shortest prefix first."""
    text = prompt_text(request).encode()
    digest = hashlib.sha256()
    found = []
    step = CHUNK_CHARACTERS
    for start in range(0, min(len(text) // step, MAX_CHUNKS) * step, step):
        digest.update(text[start : start + step])
        found.append(keys.affinity(digest.copy().hexdigest()))
    return found


@dataclass(frozen=True, slots=True)
class Match:
    """What the index said of one prompt: the host it prefers (an index into the candidates it
    was asked about), and the keys and epochs to record the chosen host under."""

    preferred: int | None
    names: list[str]
    epochs: dict[str, int]


class Affinity:
    """The shared index (see the module docstring)."""

    def __init__(self, redis: RedisClient, *, ttl_seconds: int, spill: int,
                 gate: asyncio.Semaphore | None = None) -> None:  # fmt: skip
        self._shared = SharedPipeline(redis, Guarded("affinity", "least-busy routing", gate=gate))
        self.ttl_seconds = ttl_seconds
        self.spill = spill

    async def lookup(self, request: Prompt, session: str | None, urls: Sequence[str]) -> Match:
        """The candidate (of ``urls``) that served the longest known prefix of ``request``, or
        its ``session``; raises ``RedisUnavailable``."""
        names = chain(request)
        if session:
            names.append(keys.affinity_session(hashlib.sha256(session.encode()).hexdigest()))
        if not names:
            return Match(None, names, {})

        def queue(pipe: Any) -> None:  # GETs, not MGET: a cluster pipeline refuses MGET
            pipe.hmget(keys.AFFINITY_EPOCHS, list(urls))
            for name in names:
                pipe.get(name)

        epochs, *found = await self._shared.run(queue)
        current = {url: int(n or 0) for url, n in zip(urls, epochs, strict=True)}
        for value in reversed(found):  # the session first, then the longest prefix
            if value is None:
                continue
            url, _, epoch = value.decode().rpartition("\t")
            if url in current and epoch == str(current[url]):
                return Match(list(urls).index(url), names, current)
        return Match(None, names, current)

    def record(self, match: Match, url: str) -> None:
        """``url`` serves this prompt now: its prefixes (and session) point there. Sent with the
        next round trip, waited for by nobody: a lost entry is one cold prompt."""
        if not match.names:
            return
        value = f"{url}\t{match.epochs.get(url, 0)}"

        def queue(pipe: Any) -> None:
            for name in match.names:
                pipe.set(name, value, ex=self.ttl_seconds)

        self._shared.post(queue)

    def forget(self, url: str) -> None:
        """``url`` was ejected: every entry naming it goes stale, on every replica."""

        def queue(pipe: Any) -> None:
            pipe.hincrby(keys.AFFINITY_EPOCHS, url, 1)
            pipe.expire(keys.AFFINITY_EPOCHS, self.ttl_seconds + 60)

        self._shared.post(queue)


def outcome(match: Match | None, chosen: int) -> Outcome:
    """How affinity fared for one generation: no entry, its host, or spilled elsewhere."""
    if match is None or match.preferred is None:
        return "miss"
    return "hit" if match.preferred == chosen else "spill"


def count(match: Match | None, urls: Sequence[str], chosen: int) -> None:
    """Counts the outcome on ``bib_affinity_total``: by the host served for a hit or miss, by
    the warm host left for a spill."""
    result = outcome(match, chosen)
    host = urls[chosen] if match is None or match.preferred is None else urls[match.preferred]
    metrics.AFFINITY.labels(host, result).inc()
