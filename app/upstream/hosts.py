"""Several engine hosts behind one token source: affinity and least-busy routing, ejection and
one retry.

Each generation goes to a serving host that has the model (as its ``/api/tags`` or
``/v1/models`` said at the last refresh): the one that served the longest prefix of its prompt
(``app.upstream.affinity``) unless that one is markedly busier, else the one with the fewest
generations in flight, counted in Redis across workers and replicas, plus the requests its
engine said it had queued at that refresh (vLLM's, SGLang's and llama.cpp's metrics: load from
elsewhere); ties are broken at random.
A host that refuses connections, times out or answers 5xx is ejected for a cool-down that
doubles with each ejection in a row (``OLLAMA_EJECT_SECONDS`` up to
``OLLAMA_EJECT_MAX_SECONDS``). When it ends, the background refresh probes the host's model
list and puts it back if it answers; a generation that then succeeds there resets the
doubling. A request that fails on one host before its first token is retried once on another;
after the first token it cannot be, since the client has already seen text.

When every host with the model is ejected, the one back soonest is tried anyway: refusing would
turn a blip into an outage. A lone host has no cool-down: it is probed again at once, so the
readiness probe says whether it answers now.

Slow is not down: a host streaming thousands of generations can take more than the probe's
0.8 s to list its models. A probe that times out while the host sent a token within
``SERVING_SECONDS`` keeps it serving, with the models it listed last, and says so in its
``last_error``; only a host that is silent too is ejected. So ``/readyz`` does not flap under
load (an orchestrator would pull a replica whose only fault is a busy Ollama), and still fails
for a host that neither lists nor streams. Ejection is each
worker's own view, learnt from its own requests and probes; in-flight counts are shared. With a
single host there is nothing to choose and nothing is counted in Redis; without Redis, each
worker counts only its own generations.

With slots (``OLLAMA_SLOTS``, or a host's ``;slots=N``), a generation takes a free slot of a
candidate host or waits its turn in ``app.upstream.fair_queue``, even with a single host; a freed
slot is announced to every waiter. Redis down: as without slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx

from app.errors import (
    ModelNotFound,
    ServiceError,
    UpstreamFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from app.ops import genai, metrics
from app.settings import BANDS, Settings, Upstream
from app.store.client import RedisUnavailable
from app.store.generations import RedisStore
from app.upstream import affinity, openai
from app.upstream.affinity import Affinity
from app.upstream.engine import Emit, EngineClient, Finished, Placed, Prompt, Queued, Token
from app.upstream.fair_queue import FairQueue
from app.upstream.ollama import OllamaClient
from app.upstream.streaming import Timeouts

logger = logging.getLogger(__name__)

PROBE_TICK_SECONDS = 0.25
PROBE_TIMEOUT_SECONDS = 0.8  # inside the readiness check's one second
IN_FLIGHT_LEASE_SECONDS = 10.0  # a dead worker's generations stop counting after this
IN_FLIGHT_RENEW_SECONDS = 3.0
HOST_FAULTS = (UpstreamUnavailable, UpstreamTimeout, UpstreamFailed)
SERVING_SECONDS = 5.0  # a host that sent a token this recently is serving, if slowly
CAPABILITIES_SECONDS = 60.0  # how long a model's capabilities are taken as a host listed them
MAX_DOUBLINGS = 64  # 2 ** 64 first cool-downs: longer than any OLLAMA_EJECT_MAX_SECONDS


@dataclass(frozen=True, slots=True)
class Timings:
    """How often hosts are probed and how long a failed one cools down (``Settings``' defaults)."""

    refresh_seconds: float  # OLLAMA_REFRESH_INTERVAL
    eject_seconds: float  # OLLAMA_EJECT_SECONDS, the first cool-down
    eject_max_seconds: float  # OLLAMA_EJECT_MAX_SECONDS

    @classmethod
    def of(cls, settings: Settings) -> Timings:
        return cls(
            refresh_seconds=settings.ollama_refresh_seconds,
            eject_seconds=settings.ollama_eject_seconds,
            eject_max_seconds=settings.ollama_eject_max_seconds,
        )


def shown(url: str) -> str:
    """A host's URL as a response header may show it: without any user or password."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def model_key(name: str) -> str:
    """Ollama's own reading of a model name: no tag means ``latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@dataclass(eq=False)
class Host:
    """One Ollama server and what this worker knows of it."""

    url: str
    client: EngineClient
    models: list[dict[str, Any]] | None = None  # /api/tags at the last refresh; None: not yet
    ejected: bool = False
    ejected_until: float = 0.0  # monotonic; the probe comes after it
    ejections: int = 0  # in a row, without a success since
    errors: int = 0
    last_error: str = ""
    refreshed_at: float = float("-inf")
    streamed_at: float = float("-inf")  # monotonic: the last token any generation got here
    tickets: set[str] = field(default_factory=set)  # generations in flight from this worker
    slots: int = 0  # generations at once here, across replicas (OLLAMA_SLOTS); 0: no cap
    engine: str = "ollama"  # what it speaks (UPSTREAMS' engine=)
    waiting: int = 0  # requests its engine said it had queued at the last probe

    def has(self, model: str) -> bool:
        if self.models is None:
            return self.engine == "ollama"  # not listed yet: let Ollama say
        return any(model_key(str(m.get("name"))) == model_key(model) for m in self.models)

    def failed(self, error: str, timings: Timings, *, eject: bool) -> None:
        self.errors += 1
        self.last_error = error
        metrics.HOST_ERRORS.labels(self.url).inc()
        if not eject:
            return
        self.ejections += 1
        # the doubling is bounded before it is a float: past about a thousand ejections in a
        # row (5,000 streams dropped at once) 2 ** n no longer fits one
        doublings = min(self.ejections - 1, MAX_DOUBLINGS)
        cool_down = min(timings.eject_seconds * 2**doublings, timings.eject_max_seconds)
        if not self.ejected:
            logger.warning("ejected Ollama host %s for %g s: %s", self.url, cool_down, error)
        self.ejected, self.ejected_until = True, time.monotonic() + cool_down
        metrics.HOST_UP.labels(self.url).set(0)

    def served(self) -> None:
        """A generation succeeded here. While the host is ejected that proves little (it may
        have started before the failure, or be the last resort): only the probe restores it."""
        if not self.ejected:
            self.ejections = 0

    def listed(self, models: list[dict[str, Any]] | None) -> None:
        """A probe answered: the host serves these models (``None``: it streams, but too busy
        to list them in time, so the last list stands)."""
        if models is not None:
            if models != self.models:
                genai.listed(shown(self.url), self.engine, [str(m.get("name")) for m in models])
            self.models = models
        self.refreshed_at = time.monotonic()
        if self.ejected:
            logger.warning("Ollama host %s is back", self.url)
            self.ejected = False
        metrics.HOST_UP.labels(self.url).set(1)

    def due(self, now: float, timings: Timings) -> bool:
        if self.ejected:
            return now >= self.ejected_until
        return now - self.refreshed_at >= timings.refresh_seconds


class Hosts:
    """The token source of the service: every configured Ollama host, chosen per generation."""

    def __init__(self, hosts: Sequence[Host], store: RedisStore | None, timings: Timings,
                 queue: FairQueue | None = None, affinity: Affinity | None = None
                 ) -> None:  # fmt: skip
        self.hosts = list(hosts)
        self._queue = queue if any(h.slots for h in self.hosts) else None
        for host in self.hosts:
            if host.slots:
                metrics.HOST_SLOTS.labels(host.url).set(host.slots)
        # one host: nothing to share, unless its slots are counted
        self._store = store if len(self.hosts) > 1 or self._queue is not None else None
        many = len(self.hosts) > 1 and self._store is not None
        self._affinity = affinity if many and affinity and affinity.ttl_seconds else None
        self._timings = timings
        if len(self.hosts) == 1:  # nothing to route around: probe again at once, and say so
            self._timings = replace(timings, eject_seconds=0.0, eject_max_seconds=0.0)
        self._worker = secrets.token_hex(6)
        self._issued = 0
        self._capabilities: dict[str, tuple[float, frozenset[str] | None]] = {}

    @classmethod
    def connect(
        cls,
        upstreams: Sequence[Upstream],
        store: RedisStore | None,
        *,
        first_token_timeout_seconds: float,
        idle_timeout_seconds: float,
        timings: Timings,
        queue: FairQueue | None = None,
        affinity: Affinity | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> Hosts:
        timeouts = Timeouts(first_token_timeout_seconds, idle_timeout_seconds)

        def client(upstream: Upstream) -> EngineClient:
            if upstream.engine == "ollama":
                return OllamaClient.connect(
                    upstream.url, first_token_timeout_seconds=first_token_timeout_seconds,
                    idle_timeout_seconds=idle_timeout_seconds, transport=transport,
                )  # fmt: skip
            return openai.client(upstream.url, upstream.engine, upstream.key, timeouts,
                                 transport)  # fmt: skip

        hosts = [Host(u.url, client(u), slots=u.slots, engine=u.engine) for u in upstreams]
        return cls(hosts, store, timings, queue, affinity)

    async def aclose(self) -> None:
        for host in self.hosts:
            await host.client.aclose()

    async def generate(self, request: Prompt, emit: Emit, *, client: str) -> None:
        """Streams ``request`` from the host affinity prefers or the least busy host with the
        model (waiting for a slot as ``client`` when slots are counted); see the docstring."""
        tried: list[Host] = []
        while True:
            candidates = self._candidates(request.model, tried)
            if not candidates:
                raise ModelNotFound(f"No upstream serves the model {request.model}.")
            host, ticket = await self._take(candidates, request, client, emit)
            emit(Placed(shown(host.url), host.engine))
            taken_at = time.monotonic()
            tried.append(host)
            started = False

            def relay(item: Token | Finished, here: Host = host) -> None:
                nonlocal started
                started = True
                here.streamed_at = time.monotonic()
                emit(item)

            try:
                await host.client.generate(request, relay)
            except ServiceError as exc:
                fault = isinstance(exc, HOST_FAULTS)
                self._failed(host, exc.detail, eject=fault)
                elsewhere = [h for h in self._candidates(request.model, tried)
                             if h.has(request.model)]  # fmt: skip
                if started or not fault or len(tried) > 1 or not elsewhere:
                    raise
                logger.info("retrying on another Ollama host after %s: %s", host.url, exc.detail)
                continue
            finally:
                await self._give_back(host, ticket)
            host.served()
            if self._queue is not None:
                self._queue.durations.add(time.monotonic() - taken_at)
            return

    def _failed(self, host: Host, error: str, *, eject: bool) -> None:
        """``host`` failed; ejected now, it loses its affinity entries everywhere."""
        was_ejected = host.ejected
        host.failed(error, self._timings, eject=eject)
        if host.ejected and not was_ejected and self._affinity is not None:
            self._affinity.forget(host.url)

    def slots_freed(self) -> None:
        """Somewhere a host's slot was freed or a waiter left (``bib:slots``)."""
        if self._queue is not None:
            self._queue.wake()

    def _candidates(self, model: str, tried: Sequence[Host]) -> list[Host]:
        """Serving hosts with the model; else the ejected hosts that have it (which say it is
        unavailable); else any serving Ollama host (Ollama then says what it lacks; another
        engine would answer with whatever it serves), and none when only other engines serve;
        else, as a last resort, the ejected host that is back soonest."""
        hosts = [h for h in self.hosts if h not in tried]
        serving = [h for h in hosts if not h.ejected]
        with_model = [h for h in serving if h.has(model)]
        if with_model:
            return with_model
        away = [h for h in hosts if h.ejected and h.has(model)]  # it lives where none answers
        if away:
            return away
        if serving:  # an OpenAI-compatible server may answer any name with the one it has
            return [h for h in serving if h.engine == "ollama"]
        return sorted(hosts, key=lambda h: h.ejected_until)[:1]

    async def _take(self, candidates: list[Host], request: Prompt, client: str, emit: Emit
                    ) -> tuple[Host, str]:  # fmt: skip
        """Picks the candidate affinity prefers, else the least busy (random among equals),
        and counts the generation; with slots, waits in the fair queue for one. Without
        Redis, only this worker counts."""
        random.shuffle(candidates)
        urls = [h.url for h in candidates]
        self._issued += 1
        ticket = f"{self._worker}:{self._issued}"
        chosen = min(candidates, key=lambda h: len(h.tickets) + h.waiting)  # this worker's
        match, spill = None, 0
        if self._affinity is not None:
            spill = self._affinity.spill
            with contextlib.suppress(RedisUnavailable):  # least busy, then
                match = await self._affinity.lookup(request, request.session, urls)
        preferred = None if match is None else match.preferred
        if self._queue is not None:
            with contextlib.suppress(RedisUnavailable):  # counted here only
                chosen = candidates[await self._queue.take(
                    urls, [h.slots for h in candidates], ticket, IN_FLIGHT_LEASE_SECONDS,
                    client=client, model=request.model, band=request.band, preferred=preferred,
                    spill=spill, on_position=lambda n: emit(Queued(n)),
                )]  # fmt: skip
        elif self._store is not None:
            try:
                waiting = [h.waiting for h in candidates]
                chosen = candidates[await self._store.pick_host(
                    urls, ticket, IN_FLIGHT_LEASE_SECONDS, waiting, preferred, spill)]  # fmt: skip
            except RedisUnavailable:
                pass  # counted here only
        if self._affinity is not None and match is not None:
            affinity.count(match, urls, candidates.index(chosen))
            self._affinity.record(match, chosen.url)
        chosen.tickets.add(ticket)
        metrics.HOST_IN_FLIGHT.labels(chosen.url).inc()
        return chosen, ticket

    async def _give_back(self, host: Host, ticket: str) -> None:
        host.tickets.discard(ticket)
        metrics.HOST_IN_FLIGHT.labels(host.url).dec()
        if self._store is not None:
            with anyio.CancelScope(shield=True):  # also when the client's leaving cancels us
                with contextlib.suppress(RedisUnavailable):  # else its lease runs out
                    announce = self._queue is not None
                    await self._store.drop_host_ticket(host.url, ticket, announce=announce)

    async def refresh(self, *, all_due: bool = False) -> None:
        """Probes the hosts whose turn it is (``all_due``: every host not cooling down), each
        bounded by ``PROBE_TIMEOUT_SECONDS``, all at once."""
        now = time.monotonic()
        due = [h for h in self.hosts if h.due(now, self._timings)
               or (all_due and not (h.ejected and now < h.ejected_until))]  # fmt: skip
        await asyncio.gather(*(self._probe(host) for host in due))

    async def _probe(self, host: Host) -> None:
        try:
            with anyio.fail_after(PROBE_TIMEOUT_SECONDS):
                models = await host.client.models()
                host.waiting = await host.client.waiting() or 0
        except TimeoutError:
            slow = f"no model list within {PROBE_TIMEOUT_SECONDS:g} s"
            if time.monotonic() - host.streamed_at < SERVING_SECONDS:
                host.last_error = f"{slow}, while streaming: slow, not down"
                host.listed(None)
            else:
                self._failed(host, slow, eject=True)
        except ServiceError as exc:
            self._failed(host, exc.detail, eject=True)
        else:
            host.listed(models)

    async def check(self) -> list[dict[str, Any]]:
        """The readiness check: probes now, passes while a host serves; its models."""
        await self.refresh(all_due=True)
        self._serving()  # raises when none is
        return self.models()

    def models(self) -> list[dict[str, Any]]:
        """The models of the serving hosts, as their last ``/api/tags`` listed them, each once."""
        merged: dict[str, dict[str, Any]] = {}
        for host in self.hosts:
            if not host.ejected:
                for model in host.models or ():
                    merged.setdefault(model_key(str(model.get("name"))), model)
        return list(merged.values())

    async def version(self) -> str:
        """The Ollama version of the first serving host that answers."""
        *others, last = self._serving()
        for host in others:
            with contextlib.suppress(ServiceError):
                return await host.client.version()
        return await last.client.version()

    async def running(self) -> list[dict[str, Any]]:
        """The models the serving hosts hold in memory (``/api/ps``), each once; a host that
        does not answer is left out."""
        found = await asyncio.gather(*(h.client.running() for h in self._serving()),
                                     return_exceptions=True)  # fmt: skip
        merged: dict[str, dict[str, Any]] = {}
        for models in found:
            if isinstance(models, BaseException):
                if not isinstance(models, ServiceError):
                    raise models
                continue
            for model in models:
                merged.setdefault(model_key(str(model.get("name"))), model)
        return list(merged.values())

    async def show(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        """``/api/show`` from a serving host that has ``model``."""
        return await self._with_model(model).client.show(body)

    async def can_think(self, model: str) -> bool | None:
        """Whether ``model`` can think, as a serving host's ``/api/show`` lists its
        capabilities, kept ``CAPABILITIES_SECONDS``; ``None`` when no host says (the engine then
        answers for itself)."""
        key = model_key(model)
        known = self._capabilities.get(key)
        if known is None or known[0] <= time.monotonic():
            try:
                listed = (await self.show(model, {"model": model})).get("capabilities")
            except ServiceError:
                return None
            found = frozenset(map(str, listed)) if isinstance(listed, list) else None
            known = (time.monotonic() + CAPABILITIES_SECONDS, found)
            self._capabilities[key] = known
        return None if known[1] is None else "thinking" in known[1]

    async def embed(self, model: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Embeddings (``path``: ``/api/embed`` or ``/api/embeddings``) from a serving host
        that has ``model``, the least busy of this worker's."""
        return await self._with_model(model).client.embed(path, body)

    async def forward(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
        """A model management request, passed on to every serving Ollama host in turn: the
        answer of the first that refuses it, else the last one's (other engines manage their
        models themselves)."""
        *others, last = [h for h in self._serving() if h.engine == "ollama"] or self._serving()
        for host in others:
            answer = await host.client.forward(method, path, body)
            if answer[0] >= 400:
                return answer
        return await last.client.forward(method, path, body)

    async def count_tokens(self, request: Prompt) -> int | None:
        """The prompt's tokens as the engine serving its model counts them; ``None`` when it
        cannot (Ollama has no tokenizer endpoint) or does not answer."""
        try:
            return await self._with_model(request.model).client.count_tokens(request)
        except ServiceError:
            return None

    def _with_model(self, model: str) -> Host:
        having = [h for h in self._serving() if h.has(model)]
        if not having:
            raise ModelNotFound(f"No Ollama host has the model {model}.")
        return min(having, key=lambda h: len(h.tickets))

    def _serving(self) -> list[Host]:
        hosts = [h for h in self.hosts if not h.ejected]
        if not hosts:
            raise UpstreamUnavailable("no Ollama host is serving")
        return hosts

    async def report(self, queued: Mapping[str, int]) -> list[dict[str, Any]]:
        """Each host's state for ``/v1/health``: in-flight counts are the shared ones;
        ``queued``: the waiters per host URL (``queue_lengths``)."""
        counts = [len(h.tickets) for h in self.hosts]
        if self._store is not None:
            with contextlib.suppress(RedisUnavailable):  # else this worker's own
                counts = await self._store.host_counts([h.url for h in self.hosts])
        now = time.monotonic()
        return [
            {
                "url": host.url,
                "engine": host.engine,
                "state": "ejected" if host.ejected else "serving",
                "in_flight": count,
                "slots": host.slots or None,  # None: no cap, no gateway queue
                "queued": queued.get(host.url, 0),  # waiting for a slot that this host has
                "errors": host.errors,
                "last_error": host.last_error or None,
                "back_in_seconds": round(max(0.0, host.ejected_until - now), 3)
                if host.ejected
                else 0,
                "models": [str(m.get("name")) for m in host.models or ()],
            }
            for host, count in zip(self.hosts, counts, strict=True)
        ]

    async def queue_lengths(self) -> dict[str, dict[str, int]]:
        """Generations waiting for a slot, by host URL, by model and by band (empty: no
        queue, or Redis cannot say)."""
        if self._queue is not None:
            with contextlib.suppress(RedisUnavailable):
                return await self._queue.lengths()
        return {"hosts": {}, "models": {}, "bands": dict.fromkeys(BANDS, 0)}

    async def run(self) -> None:
        """The background work of a worker's life: probes, and renewing its in-flight tickets."""
        renewed_at = time.monotonic()
        while True:
            await self.refresh()
            if self._store is not None and time.monotonic() - renewed_at >= IN_FLIGHT_RENEW_SECONDS:
                renewed_at = time.monotonic()
                tickets = {h.url: sorted(h.tickets) for h in self.hosts if h.tickets}
                if tickets:
                    with contextlib.suppress(RedisUnavailable):  # tried again next time
                        await self._store.renew_host_tickets(tickets, IN_FLIGHT_LEASE_SECONDS)
            await asyncio.sleep(PROBE_TICK_SECONDS)
