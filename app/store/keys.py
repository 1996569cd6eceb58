"""Every Redis key and channel the service uses, built here and nowhere else.

``{...}`` is the Redis Cluster hash tag: a generation's keys share one slot, and so do a
request content's keys, one client's rate-limit counters, and all hosts' in-flight sets, so
each script and pipeline stays within a slot.

    bib:{<sha256>}:cache      finished completion (``cache.py`` format), TTL ``CACHE_TTL``
    bib:{<sha256>}:embedding  Ollama's answer to an embedding request (``embeddings.py``), TTL
    ``CACHE_TTL`` bib:{<sha256>}:live       id of the generation producing this content now; a lease
    of ``GENERATION_LEASE_SECONDS`` its leader renews, so a dead worker's claim expires
    bib:{<g>}:meta            the generation's content hash and model (for lookups by id)
    bib:{<g>}:events          a stream of token batches, then one ``done`` or ``error`` entry
    (``entries.py`` format) bib:{<g>}:lease           exists while the leader's worker is alive
    bib:{<g>}:watchers        clients on other workers, scored by when their presence expires
    bib:stop                  pub/sub channel: ids of generations a client asked to stop bib:watch
    pub/sub channel: ids of generations a client on another worker began to follow
    bib:{hosts}:in-flight:<url>  generations running on that Ollama host, scored by when their
    ticket expires (``hosts.py``); one tag, so one script sees them all bib:{hosts}:queue
    generations waiting for a host's slot (``fairqueue.py``), scored by their fair tag; ``:leases``,
    ``:entries``, ``:clients``, ``:tags``, ``:clock``, ``:seq`` beside it (the same tag) bib:slots
    pub/sub channel: a host's slot was freed, or a waiter left bib:rl:{<client>}:<n>     requests of
    a client in fixed window ``n`` (``limiter.py``), expiring after two windows
    bib:rl:{<client>}:tokens:<n>  Ollama's tokens charged to a client in token window ``n``,
    expiring after two windows bib:rl:{<client>}:running tickets of the client's running
    generations, scored by when their lease ends (renewed with the generation's)
    bib:{keys}:key:<sha256>   an API key's record (``keyring.py``) bib:{keys}:names          API key
    names -> their sha256
"""

from __future__ import annotations

from typing import Literal

STOP_CHANNEL = "bib:stop"
API_KEY_NAMES = "bib:{keys}:names"
WATCH_CHANNEL = "bib:watch"
SLOTS_CHANNEL = "bib:slots"


def content(sha: str, name: Literal["cache", "live", "embedding"]) -> str:
    return f"bib:{{{sha}}}:{name}"


def generation(generation_id: str, name: Literal["meta", "events", "lease", "watchers"]) -> str:
    return f"bib:{{{generation_id}}}:{name}"


def host_in_flight(url: str) -> str:
    return f"bib:{{hosts}}:in-flight:{url}"


def queue() -> list[str]:
    """The queue's keys, in the order ``fair_queue.lua`` takes them."""
    parts = ("", ":leases", ":entries", ":clients", ":tags", ":clock", ":seq")
    return ["bib:{hosts}:queue" + part for part in parts]


def rate_window(client: str, index: int) -> str:
    return f"bib:rl:{{{client}}}:{index}"


def token_window(client: str, index: int) -> str:
    return f"bib:rl:{{{client}}}:tokens:{index}"


def running(client: str) -> str:
    return f"bib:rl:{{{client}}}:running"


def api_key(sha: str) -> str:
    return f"bib:{{keys}}:key:{sha}"
