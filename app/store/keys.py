"""Every Redis key and channel the service uses, built here and nowhere else.

``{...}`` is the Redis Cluster hash tag: a generation's keys share one slot, and so do a
request content's keys, one client's quota counters, and all hosts' in-flight sets, so each
script and pipeline stays within a slot.

    bib:{<sha256>}:cache      finished completion (``app.generations.cache`` format), TTL
                              ``CACHE_TTL``
    bib:{<sha256>}:embedding  an engine's answer to an embedding request
                              (``app.generations.embeddings``), TTL ``CACHE_TTL``
    bib:{<sha256>}:live       id of the generation producing this content now; a lease of
                              ``GENERATION_LEASE_SECONDS`` its leader renews, so a dead
                              worker's claim expires
    bib:{<g>}:meta            the generation's content hash and model (for lookups by id)
    bib:{<g>}:events          a stream of token batches, then one ``done`` or ``error`` entry
                              (``app.store.entries`` format)
    bib:{<g>}:lease           exists while the leader's worker is alive
    bib:{<g>}:watchers        tickets of the clients on other workers (``app.store.tickets``)
    bib:stop                  pub/sub channel: ids of generations a client asked to stop
    bib:watch                 pub/sub channel: ids of generations a client on another worker
                              began to follow
    bib:{hosts}:in-flight:<url>  tickets of the generations running on that host
                              (``app.store.tickets``); one tag, so one script sees them all
    bib:{hosts}:queue         generations waiting for a host's slot
                              (``app.upstream.fair_queue``), scored by band and fair tag;
                              ``:leases``, ``:entries``, ``:clients``, ``:tags``, ``:clocks``,
                              ``:seq``, ``:batch`` beside it (the same tag)
    bib:slots                 pub/sub channel: a host's slot was freed, or a waiter left
    bib:{affinity}:<sha256>   the host (and its epoch) that last served a prompt with this
                              prefix (``app.upstream.affinity``), TTL ``AFFINITY_TTL``
    bib:{affinity}:session:<sha256>  the same, for a client's session key
    bib:{affinity}:epochs     host URL -> its epoch, raised when the host is ejected
    bib:rl:{<client>}:<n>     requests of a client in fixed window ``n``
                              (``app.access.quotas``), expiring after two windows
    bib:rl:{<client>}:tokens:<n>  the engines' tokens charged to a client in token window
                              ``n``, expiring after two windows
    bib:rl:{<client>}:running tickets of the client's running generations
                              (``app.store.tickets``), renewed with the generation's lease
    bib:usage:{<client>}:<day>  what an API key's client (``key:<name>``) used on a UTC day
                              (``YYYY-MM-DD``): ``<model>\\t<counter>`` -> count
                              (``app.store.usage``), TTL ``USAGE_RETENTION_DAYS`` + 1 day
    bib:{resp_<id>}:response  a stored OpenAI response (``app.api.openai.responses``), TTL
                              ``RESPONSES_TTL``
    bib:{keys}:key:<sha256>   an API key's record (``app.access.api_keys``)
    bib:{keys}:names          API key names -> their sha256
    bib:{keys}:used           API key names -> when each was last used (epoch seconds), noted
                              when a worker reads the key's record
"""

from __future__ import annotations

from typing import Literal

STOP_CHANNEL = "bib:stop"
API_KEY_NAMES = "bib:{keys}:names"
API_KEYS_USED = "bib:{keys}:used"
WATCH_CHANNEL = "bib:watch"
SLOTS_CHANNEL = "bib:slots"
AFFINITY_EPOCHS = "bib:{affinity}:epochs"


def content(sha: str, name: Literal["cache", "live", "embedding"]) -> str:
    return f"bib:{{{sha}}}:{name}"


def generation(generation_id: str, name: Literal["meta", "events", "lease", "watchers"]) -> str:
    return f"bib:{{{generation_id}}}:{name}"


def host_in_flight(url: str) -> str:
    return f"bib:{{hosts}}:in-flight:{url}"


def affinity(sha: str) -> str:
    return f"bib:{{affinity}}:{sha}"


def affinity_session(sha: str) -> str:
    return f"bib:{{affinity}}:session:{sha}"


def queue() -> list[str]:
    """The queue's keys, in the order ``fair_queue.lua`` takes them."""
    parts = ("", ":leases", ":entries", ":clients", ":tags", ":clocks", ":seq", ":batch")
    return ["bib:{hosts}:queue" + part for part in parts]


def rate_window(client: str, index: int) -> str:
    return f"bib:rl:{{{client}}}:{index}"


def token_window(client: str, index: int) -> str:
    return f"bib:rl:{{{client}}}:tokens:{index}"


def running(client: str) -> str:
    return f"bib:rl:{{{client}}}:running"


def usage(client: str, day: str) -> str:
    return f"bib:usage:{{{client}}}:{day}"


def api_key(sha: str) -> str:
    return f"bib:{{keys}}:key:{sha}"


def response(response_id: str) -> str:
    return f"bib:{{{response_id}}}:response"
