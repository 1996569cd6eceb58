"""``./scripts/bench``: measures the service against floors run in the same process tree.

A floor is the least the same stack can do, in its own process (``bench/floors.py``): a bare
Starlette hello world, a relay that sends raw ASGI messages, an idle raw ASGI stream. The app
and the floors run on one uvicorn worker pinned to core 0; the load (``wrk`` for request rates,
the lean asyncio client of ``harness/load.py`` for streams), Valkey and the simulator on core 1.
Every figure is the median of several interleaved rounds, so a noisy neighbour on the shared
machine shifts floor and subject alike. Only ratios and medians are worth quoting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import orjson
import redis
import redis.asyncio

from harness import servers
from harness.load import (
    concurrent,
    cpu_seconds,
    get,
    hold_streams,
    median,
    post,
    read_until_end,
    rss_bytes,
    stream_once,
)

TOKENS = 50
TOKEN_DELAY_SECONDS = 0.02
DONE = b"\nevent: done\n"  # an event line: a token's text can say "event: done" too
Table = tuple[str, list[str], list[list[str]]]
APP_CORE, LOAD_CORE = 0, 1
PINNED = (os.cpu_count() or 1) >= 2
OPENING_SECONDS = 240  # for thousands of streams to open
LIVE_TOKEN_SECONDS = 4.0
# the service as deployed, its limiter on (but out of the way of a benchmark's load)
DEFAULTS = {"RATE_LIMIT_MAX": str(10**9), "LOG_LEVEL": "info", "LOG_FORMAT": "json"}


def _simulator() -> servers.Server:
    """The simulator as every section uses it: ``TOKENS`` tokens ``TOKEN_DELAY_SECONDS`` apart."""
    return servers.simulator("--tokens", str(TOKENS), "--token-delay", str(TOKEN_DELAY_SECONDS)
                             ).start()  # fmt: skip


class Setup:
    """Valkey, the simulator, and bench apps (one uvicorn worker each) for one run."""

    def __init__(self) -> None:
        self.valkey = servers.valkey().start(ready_path=None)
        self.ollama = _simulator()
        self.apps: list[servers.Server] = []

    def app(
        self, *, redis: bool = True, rate_limit_max: int = 0, env: dict[str, str] | None = None
    ) -> servers.Server:
        """The service as a user runs it (``python -m app``, one worker), on the app's core;
        without ``redis`` it points at a closed port. ``rate_limit_max`` 0 turns the limiter
        off."""
        redis_port = self.valkey.port if redis else servers.free_port()
        port = servers.free_port()
        env = {
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "OLLAMA_HOST": self.ollama.url,
            "LOG_LEVEL": "warning",
            "RATE_LIMIT_MAX": str(rate_limit_max),
            **(env or {}),
            "HOST": "127.0.0.1",
            "PORT": str(port),
        }
        argv = [*_pinned(), servers.PYTHON, "-m", "app"]
        app = servers.Server(argv, port, env=env).start("/livez")
        self.apps.append(app)
        return app

    def floor(self, kind: str, *args: str) -> servers.Server:
        """A floor of ``bench/floors.py`` in its own process, on the app's core."""
        port = servers.free_port()
        argv = [servers.PYTHON, "-m", "bench.floors", "--kind", kind, "--port", str(port),
                "--ollama", self.ollama.url, *args]  # fmt: skip
        floor = servers.Server([*_pinned(), *argv], port).start(ready_path=None)
        self.apps.append(floor)
        return floor

    def stop(self) -> None:
        for server in (*self.apps, self.ollama, self.valkey):
            server.stop()


def relay(setup: Setup, rounds: int, stream_counts: Sequence[int]) -> list[Table]:
    """CPU per relayed token and added time to first token: the service with its defaults
    (publication to Redis, the limiter, metrics and logs) beside the raw ASGI relay."""
    apps = {"floor": setup.floor("relay"), "ours": setup.app(rate_limit_max=10**9,
                                                             env=DEFAULTS)}  # fmt: skip
    rows: list[list[str]] = []
    for count in stream_counts:
        cpu: dict[str, list[float]] = {name: [] for name in apps}
        added_ttft: dict[str, list[float]] = {name: [] for name in apps}
        for round_ in range(rounds):
            direct = _ttft(count, setup.ollama.port, f"{round_} direct", direct=True)
            for name, app in apps.items():
                assert app.process is not None
                before = cpu_seconds(app.process.pid)
                ttft = _ttft(count, app.port, f"{round_} {name}")
                spent = cpu_seconds(app.process.pid) - before
                cpu[name].append(spent / (count * TOKENS) * 1e6)
                added_ttft[name].append((ttft - direct) * 1e3)
        rows.append(_row(f"{count} streams: CPU µs per relayed token", cpu["floor"], cpu["ours"],
                         "{:.0f}"))  # fmt: skip
        floor_ms, ours_ms = median(added_ttft["floor"]), median(added_ttft["ours"])
        rows.append([f"{count} streams: added time to first token, ms", f"{floor_ms:.1f}",
                     f"{ours_ms:.1f}", f"+{ours_ms - floor_ms:.1f} ms"])  # fmt: skip
    return [
        (
            "relay: the service with its defaults beside the floor (aiohttp upstream, raw ASGI "
            "sends), added time to first token over the simulator direct",
            ["measure", "floor: raw ASGI relay", "ours: defaults", "ours/floor"],
            rows,
        )
    ]


def replay(setup: Setup, rounds: int, seconds: float, connections: int) -> list[Table]:
    """Streamed cache hits (a 50-token completion) per second, from ``wrk``, beside a bare
    Starlette hello world in its own process; with the limiter on (admitting) and off; the
    Redis round trips per request; and the hello world with the limiter's check and the
    request log line, the two parts of every limited request, to show what they alone cost."""
    floor = setup.floor("hello")
    redis_url = f"redis://127.0.0.1:{setup.valkey.port}/0"
    parts = {"limiter": setup.floor("hello", "--limiter", redis_url),
             "log": setup.floor("hello", "--log"),
             "both": setup.floor("hello", "--limiter", redis_url, "--log")}  # fmt: skip
    apps = {"on": setup.app(rate_limit_max=10**9, env=DEFAULTS),
            "off": setup.app(env={**DEFAULTS, "RATE_LIMIT_MAX": "0"})}  # fmt: skip
    body = orjson.dumps({"prompt": "replay bench", "options": {"sim_token_delay": 0}})
    asyncio.run(concurrent(1, apps["on"].port, [post("/v1/chats/generate", body)], b"", DONE))
    rps: dict[str, list[float]] = {name: [] for name in ("floor", *apps, *parts)}
    commands: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        rps["floor"].append(_wrk(floor.port, "/", None, connections, seconds))
        for name, part in parts.items():
            rps[name].append(_wrk(part.port, "/", None, connections, seconds))
        for name, app in apps.items():
            before = _redis_commands(setup.valkey)
            rate = _wrk(app.port, "/v1/chats/generate", body, connections, seconds)
            commands[name].append((_redis_commands(setup.valkey) - before) / (rate * seconds))
            rps[name].append(rate)
    label = f"requests per second, wrk -c{connections}"
    per_request = "Redis round trips per request"
    return [
        (
            "replay: streamed cache hits on one worker (defaults, limiter on) beside a bare "
            "Starlette hello world in its own process",
            ["measure", "floor: hello world", "ours: cache hit", "ours/floor"],
            [_row(label, rps["floor"], rps["on"], "{:.0f}")],
        ),
        (
            "replay: the rate limiter's share",
            ["measure", "limiter off", "limiter on (admitting)", "on/off"],
            [
                _row(label, rps["off"], rps["on"], "{:.0f}"),
                _row(per_request, commands["off"], commands["on"], "{:.2f}"),
            ],
        ),
        (
            "replay: the hello world with one part of a limited request (the service's limiter "
            "check, its JSON request log line, both), in its own process",
            ["measure", "floor: hello world", "hello world with it", "with/floor"],
            [
                _row(f"{name}: {label}", rps["floor"], rps[name], "{:.0f}")
                for name in ("limiter", "log", "both")
            ],
        ),
    ]


def _wrk(port: int, path: str, body: bytes | None, connections: int, seconds: float,
         headers: dict[str, str] | None = None) -> float:  # fmt: skip
    """Requests per second from ``wrk`` (one thread, on the load core); every answer a 2xx."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        if body is not None:
            script.write(f'wrk.method = "POST"\nwrk.body = [[{body.decode()}]]\n'
                         'wrk.headers["Content-Type"] = "application/json"\n')  # fmt: skip
        for name, value in (headers or {}).items():
            script.write(f'wrk.headers["{name}"] = "{value}"\n')
    argv += ["-s", script.name, f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(_pinned(LOAD_CORE) + argv, capture_output=True, text=True, check=True)
    os.unlink(script.name)
    if "Non-2xx" in out.stdout:
        raise RuntimeError(f"wrk saw errors: {out.stdout}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)[1])  # type: ignore[index]


def capacity(setup: Setup, streams: int) -> list[Table]:
    """Resident memory per open stream on one worker, with that many streams held open, beside
    the same number of idle raw ASGI SSE responses (the floor of any stream); the full garbage
    collections the worker made while they opened; and the Redis connections it held."""
    floor = setup.floor("idle", "--ping", "2")
    idle, idle_pauses, _ = asyncio.run(_kib_per_stream(floor, [post("/", b"")] * streams))
    rows, pause_rows, connection_rows = [], [], []
    for label, shared in (("distinct generations", False), ("one shared generation", True)):
        own = servers.valkey().start(ready_path=None)  # only this app's connections on it
        app = setup.app(env={**DEFAULTS, "HEARTBEAT_INTERVAL": "2", "UPSTREAM_TIMEOUT": "600",
                             "REDIS_URL": f"redis://127.0.0.1:{own.port}/0"})  # fmt: skip
        hang = {"sim_fault": "hang", "sim_fault_after": 0}  # Ollama silent: streams just stay
        requests = [
            post("/v1/chats/generate", orjson.dumps(
                {"prompt": "held" if shared else f"held {i}", "options": hang}))
            for i in range(streams)
        ]  # fmt: skip
        ours, pauses, connections = asyncio.run(_kib_per_stream(app, requests, own))
        own.stop()
        rows.append([f"{streams} streams, {label}: KiB per stream", f"{idle:.1f}", f"{ours:.1f}",
                     f"{ours / idle:.2f}x"])  # fmt: skip
        pause_rows.append([f"{streams} streams, {label}", idle_pauses, pauses])
        connection_rows.append([f"{streams} streams, {label}", str(connections)])
    return [
        (
            f"capacity: resident memory of one worker holding {streams} open streams",
            ["measure", "floor: idle raw ASGI stream", "ours", "ours/floor"],
            rows,
        ),
        (
            "capacity: full garbage collections while the streams opened "
            "(count; the longest, by histogram bucket)",
            ["measure", "floor: idle raw ASGI stream", "ours"],
            pause_rows,
        ),
        (
            "capacity: Redis connections the worker held, the most seen (INFO clients)",
            ["measure", "connections (REDIS_MAX_CONNECTIONS=64)"],
            connection_rows,
        ),
    ]


def live(setup: Setup, streams: int, seconds: float) -> list[Table]:
    """``/livez`` and heartbeats while ``streams`` distinct generations relay tokens on one
    worker: the slowest of probes every 100 ms for ``seconds``, and the longest gap between
    two pings of any stream, beside the interval."""
    own = servers.valkey().start(ready_path=None)
    app = setup.app(env={**DEFAULTS, "HEARTBEAT_INTERVAL": "2", "UPSTREAM_TIMEOUT": "600",
                         "REDIS_URL": f"redis://127.0.0.1:{own.port}/0"})  # fmt: skip
    # a token every 4 s each, for as long as it takes: more would be the simulator's limit (one
    # process, on the load core), not the service's
    tokens = {"sim_tokens": 100_000, "sim_token_delay": LIVE_TOKEN_SECONDS}
    requests = [post("/v1/chats/generate", orjson.dumps({"prompt": f"live {i}", "options": tokens}))
                for i in range(streams)]  # fmt: skip
    opened, slowest, gap, connections = asyncio.run(_live(app, requests, seconds, own))
    own.stop()
    return [
        (
            f"liveness: {streams} distinct generations relaying a token every "
            f"{LIVE_TOKEN_SECONDS:g} s each on one worker, over {seconds:g} s",
            ["measure", "aim", "ours"],
            [
                [f"streams open within {OPENING_SECONDS} s", str(streams), str(opened)],
                ["slowest /livez of probes every 100 ms, ms", "<= 100", f"{slowest * 1e3:.0f}"],
                ["longest gap between a stream's pings, s (interval 2 s)", "<= 3.0", f"{gap:.2f}"],
                ["Redis connections held, the most seen", "<= 64", str(connections)],
            ],
        )
    ]


async def _live(
    app: servers.Server, requests: list[bytes], seconds: float, valkey: servers.Server
) -> tuple[int, float, float, int]:
    opened = 0

    def count() -> None:
        nonlocal opened
        opened += 1

    pings: list[list[float]] = []
    holding = asyncio.create_task(
        hold_streams(app.port, requests, OPENING_SECONDS + seconds, on_open=count, pings=pings)
    )
    started = time.perf_counter()
    for _ in range(int(OPENING_SECONDS / 0.5)):  # what has not opened by then is reported
        if opened >= len(requests):
            break
        await asyncio.sleep(0.5)
    window_start = time.perf_counter() - started
    slowest, connections = 0.0, 0
    watcher = _Connections(valkey)
    while time.perf_counter() - started < window_start + seconds:
        slowest = max(slowest, await _probe(app.port))
        connections = max(connections, await watcher.count())
        await asyncio.sleep(0.1)
    await watcher.aclose()
    holding.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await holding
    gaps = [later - earlier for seen in pings for earlier, later in itertools.pairwise(seen)
            if earlier >= window_start]  # fmt: skip
    return opened, slowest, max(gaps, default=float("inf")), connections


async def _probe(port: int) -> float:
    """How long one ``GET /livez`` takes, connection included."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get("/livez"))
    await reader.read()  # Connection: close
    writer.close()
    return time.perf_counter() - started


async def _kib_per_stream(
    app: servers.Server, requests: list[bytes], valkey: servers.Server | None = None
) -> tuple[float, str, int]:
    """How much the app's resident memory grows, per stream, once every request's stream has
    sent its first bytes (and pinged for a while). For the service (on a ``valkey`` of its own):
    its full garbage collections till then, and the most Redis connections seen meanwhile."""
    assert app.process is not None
    before = rss_bytes(app.process.pid)
    opened = connections = 0
    watcher = _Connections(valkey) if valkey is not None else None

    def count() -> None:
        nonlocal opened
        opened += 1

    holding = asyncio.create_task(hold_streams(app.port, requests, seconds=180, on_open=count))
    for _ in range(240):  # up to two minutes to open them all
        await asyncio.sleep(0.5)
        if watcher is not None:
            connections = max(connections, await watcher.count())
        if opened >= len(requests):
            break
    else:
        raise RuntimeError(f"only {opened} of {len(requests)} streams opened")
    await asyncio.sleep(3)  # a heartbeat or so: every stream's ping task has run
    held = rss_bytes(app.process.pid)
    pauses = "-"
    if watcher is not None:
        connections = max(connections, await watcher.count())
        await watcher.aclose()
        async with httpx.AsyncClient(base_url=app.url, timeout=60) as http:
            pauses = _full_collections((await http.get("/metrics")).text)
    holding.cancel()
    return (held - before) / len(requests) / 1024, pauses, connections


class _Connections:
    """Counts the clients of a Valkey that only one app uses, less this counter itself."""

    def __init__(self, valkey: servers.Server) -> None:
        self._client = redis.asyncio.Redis(port=valkey.port)

    async def count(self) -> int:
        return int((await self._client.info("clients"))["connected_clients"]) - 1

    async def aclose(self) -> None:
        await self._client.aclose()


def _full_collections(metrics: str) -> str:
    """``bib_gc_full_collection_seconds`` in a few words: how many, and the longest's bucket."""
    pattern = r'^bib_gc_full_collection_seconds_bucket\{le="([^"]+)"\} (\S+)$'
    buckets = [(bound, float(count)) for bound, count in re.findall(pattern, metrics, re.M)]
    total = buckets[-1][1]
    longest = next(bound for bound, count in buckets if count == total)
    return f"{total:.0f}; longest <= {longest} s"


def soak(setup: Setup, rounds: int, streams: int) -> list[Table]:
    """Resident memory of one worker with its defaults over ``rounds`` rounds of ``streams``
    streams at once: a quarter new prompts read to the end, a quarter the previous round's (cache
    hits), a quarter new ones cut after their first token, and a quarter resuming those with
    ``Last-Event-ID`` on the next round. It must level off: a leak grows with every round. On a
    simulator
    of its own: the shared one may still be winding down thousands of streams of the last."""
    ollama = _simulator()
    app = setup.app(rate_limit_max=10**9, env={**DEFAULTS, "OLLAMA_HOST": ollama.url})
    assert app.process is not None
    quarter = streams // 4
    before = rss_bytes(app.process.pid)
    grown: list[float] = []
    previous: list[bytes] = []
    cut: list[tuple[bytes, str]] = []
    for round_ in range(rounds):
        new = [orjson.dumps({"prompt": f"soak {round_} {i}"}) for i in range(quarter)]
        to_cut = [orjson.dumps({"prompt": f"soak cut {round_} {i}"}) for i in range(quarter)]
        jobs = [read_until_end(app.port, post("/v1/chats/generate", body))
                for body in new + previous]  # fmt: skip
        jobs += [_resume(app.port, body, last) for body, last in cut]
        results = asyncio.run(_soak_round(jobs, [_cut(app.port, body) for body in to_cut]))
        cut = list(zip(to_cut, results, strict=True))
        previous = new
        time.sleep(0.5)
        grown.append((rss_bytes(app.process.pid) - before) / 2**20)
    app.stop()
    ollama.stop()
    half = rounds // 2
    per_round = (grown[-1] - grown[half - 1]) / (rounds - half)
    return [
        (
            f"soak: resident memory of one worker (defaults) over {rounds} rounds of {streams} "
            "streams (new, repeated, cut after a token, resumed)",
            ["measure", "MiB"],
            [
                ["grown after the first round", f"{grown[0]:.1f}"],
                [f"grown after round {half}", f"{grown[half - 1]:.1f}"],
                [f"grown after round {rounds}", f"{grown[-1]:.1f}"],
                [f"growth per round over the last {rounds - half}", f"{per_round:.2f}"],
            ],
        )
    ]


async def _soak_round(jobs: list[Any], cuts: list[Any]) -> list[str]:
    """Runs a round's streams at once; returns the cut streams' last event ids."""
    results = await asyncio.gather(*jobs, *cuts)
    return list(results[len(jobs) :])


async def _cut(port: int, body: bytes) -> str:
    """Reads a stream until its first token, hangs up, and returns that token's event id."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(post("/v1/chats/generate", body))
    seen = b""
    while (found := re.search(rb"\nid: (\S+)\nevent: token\n", seen)) is None:
        chunk = await reader.read(65536)
        if not chunk:
            raise RuntimeError(f"closed before a token: {seen[-300:]!r}")
        seen += chunk
    writer.close()
    return found[1].decode()


async def _resume(port: int, body: bytes, last_event_id: str) -> str:
    request = post("/v1/chats/generate", body).replace(
        b"\r\n\r\n", f"\r\nLast-Event-ID: {last_event_id}\r\n\r\n".encode(), 1
    )
    return await read_until_end(port, request)


def hosts(setup: Setup, generations: int, rounds: int, seconds: float) -> list[Table]:
    """Least-busy routing over three simulator hosts from two replicas of four workers each:
    ``generations`` distinct generations started at once, their in-flight counts read from the
    hosts themselves every 50 ms; counted in Redis beside each worker counting only its own
    (Redis unreachable). Then closed loops for ``seconds``, one host killed halfway."""
    worst: dict[str, list[tuple[int, int, int]]] = {}
    for mode, counted in (("own", False), ("shared", True)):
        sims = _hosts(3)
        redis_port = setup.valkey.port if counted else servers.free_port()  # nothing there
        env = {"OLLAMA_HOSTS": _urls(sims), "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
               "WEB_CONCURRENCY": "4", "RATE_LIMIT_MAX": "0", "LOG_LEVEL": "warning"}  # fmt: skip
        replicas = [servers.app(env).start("/livez") for _ in range(2)]
        time.sleep(2)  # every worker up
        worst[mode] = [
            asyncio.run(_burst(replicas, sims, generations, f"{mode} {r}",
                               redis_port if counted else None))
            for r in range(rounds)
        ]  # fmt: skip
        for server in (*sims, *replicas):
            server.stop()
    sims = _hosts(3)
    replicas = [setup.app(env={"OLLAMA_HOSTS": _urls(sims)}) for _ in range(2)]
    kill = asyncio.run(_kill_midway(replicas, sims, 60, seconds, kill=sims[2]))
    for server in sims:
        server.stop()
    rows = []
    for index, label in enumerate(("while all were in flight", "from the first start on")):
        own = [w[index] for w in worst["own"]]
        shared = [w[index] for w in worst["shared"]]
        rows.append([f"hosts' own counts {label}: median of rounds",
                     f"{median(own):.0f}", f"{median(shared):.0f}"])  # fmt: skip
        rows.append([f"hosts' own counts {label}: worst round", str(max(own)), str(max(shared))])
    decided = [w[2] for w in worst["shared"]]
    rows.append(["counts in Redis from the first start on: worst round", "-", str(max(decided))])
    return [
        (
            f"routing: {generations} distinct generations started at once from 2 replicas of 4 "
            f"workers to 3 hosts, {rounds} rounds; the largest difference between the hosts' "
            "in-flight counts, read every 50 ms",
            ["measure", "baseline: each worker counts its own", "ours: counted in Redis"],
            rows,
        ),
        (
            f"one of the 3 hosts killed halfway through {seconds:g} s of 60 closed loops "
            "(2 replicas, counted in Redis)",
            ["measure", "value"],
            kill,
        ),
    ]


async def _burst(
    replicas: Sequence[servers.Server],
    hosts: Sequence[servers.Server],
    count: int,
    label: str,
    redis_port: int | None,
) -> tuple[int, int, int]:
    """Starts ``count`` equal generations at once. Returns the largest in-flight difference
    between hosts, as the hosts count, while all were in flight and from the first start to the
    first end; and, from Redis (one atomic read of every host's set), the largest over the same
    span: what the routing decided, before the requests reach the hosts."""
    body = {"options": {"sim_tokens": 60}}  # 3 s each
    requests = [
        (replicas[i % len(replicas)].port,
         post("/v1/chats/generate", orjson.dumps({**body, "prompt": f"burst {label} {i}"})))
        for i in range(count)
    ]  # fmt: skip
    decided = redis.asyncio.Redis(port=redis_port) if redis_port else None
    keys = [f"bib:{{hosts}}:in-flight:{host.url}" for host in hosts]
    running = [asyncio.create_task(read_until_end(port, request)) for port, request in requests]
    all_in, from_start, in_redis = 0, 0, 0
    async with httpx.AsyncClient(timeout=5) as http:
        while not any(task.done() for task in running):
            counts = await asyncio.gather(*(_in_flight(http, host) for host in hosts))
            spread = max(counts) - min(counts)
            from_start = max(from_start, spread) if sum(counts) else from_start
            if sum(counts) == count:
                all_in = max(all_in, spread)
            if decided is not None:
                async with decided.pipeline(transaction=True) as pipe:
                    for key in keys:
                        pipe.zcard(key)
                    sets: list[int] = await pipe.execute()
                in_redis = max(in_redis, max(sets) - min(sets))
            await asyncio.sleep(0.05)
    await asyncio.gather(*running)
    if decided is not None:
        await decided.aclose()
    return all_in, from_start, in_redis


async def _in_flight(http: httpx.AsyncClient, host: servers.Server) -> int:
    return servers.in_flight((await http.get(host.url + "/_sim/counters")).json())


def _hosts(count: int) -> list[servers.Server]:
    return [servers.simulator("--tokens", "40", "--token-delay", "0.05").start()
            for _ in range(count)]  # fmt: skip


def _urls(hosts: Sequence[servers.Server]) -> str:
    return ",".join(host.url for host in hosts)


async def _kill_midway(
    replicas: Sequence[servers.Server],
    hosts: Sequence[servers.Server],
    clients: int,
    seconds: float,
    kill: servers.Server,
) -> list[list[str]]:
    """Runs closed loops of distinct generations and kills ``kill`` halfway; what that cost."""
    stop_at = time.perf_counter() + seconds
    killed_at = float("inf")
    ends: list[tuple[float, str]] = []  # (when the request was sent, how it ended)

    async def loop(client: int) -> None:
        app = replicas[client % len(replicas)]
        for n in itertools.count():
            if time.perf_counter() >= stop_at:
                return
            tokens = random.randint(20, 60)  # 1 to 3 s: hosts free up at different times
            body = orjson.dumps({"prompt": f"route {client} {n}",
                                 "options": {"sim_tokens": tokens}})  # fmt: skip
            sent = time.perf_counter()
            ends.append((sent, await read_until_end(app.port, post("/v1/chats/generate", body))))

    loops = [asyncio.create_task(loop(i)) for i in range(clients)]
    await asyncio.sleep(seconds / 2)
    async with httpx.AsyncClient(timeout=5) as http:
        lost = await _in_flight(http, kill)
    assert kill.process is not None
    kill.process.kill()
    killed_at = time.perf_counter()
    await asyncio.gather(*loops)
    after = [(sent, end) for sent, end in ends if sent > killed_at]
    first_second = [end for sent, end in after if sent < killed_at + 1]
    errors = sum(end == "error" for _, end in ends)
    return [
        ["generations in flight on the host when it was killed", str(lost)],
        ["error events clients saw, in all", str(errors)],
        ["requests sent in the first second after the kill", str(len(first_second))],
        ["of those, ended in an error", str(sum(end == "error" for end in first_second))],
        ["requests sent after the kill, in all", str(len(after))],
        ["of those, ended in an error", str(sum(end == "error" for _, end in after))],
    ]


# each surface's generate-kind request for a prompt, and the markers of its first token and end
SURFACES: dict[str, tuple[str, Callable[[str], dict[str, Any]], bytes, bytes]] = {
    "native": ("/v1/chats/generate", lambda p: {"prompt": p}, b"\nevent: token\n", DONE),
    "openai": ("/v1/completions", lambda p: {"model": "llama3.2", "prompt": p, "stream": True},
               b'"finish_reason":null', b"data: [DONE]"),
    "ollama": ("/api/generate", lambda p: {"model": "llama3.2", "prompt": p},
               b'"done":false', b'"done":true'),
    "anthropic": ("/v1/messages", lambda p: {"model": "llama3.2", "max_tokens": 4096,
                  "stream": True, "messages": [{"role": "user", "content": p}]},
                  b'"text_delta"', b"event: message_stop"),
    "responses": ("/v1/responses", lambda p: {"model": "llama3.2", "input": p, "stream": True},
                  b"event: response.output_text.delta", b"event: response.completed"),
}  # fmt: skip


def surfaces(
    setup: Setup, rounds: int, streams: int, seconds: float, connections: int
) -> list[Table]:
    """CPU per relayed token and streamed cache hits per second through every other surface
    beside the native one, on one app with its defaults (a stored response for Responses)."""
    app = setup.app(rate_limit_max=10**9, env=DEFAULTS)
    assert app.process is not None
    cpu: dict[str, list[float]] = {name: [] for name in SURFACES}
    rps: dict[str, list[float]] = {name: [] for name in SURFACES}
    hit_cpu: dict[str, list[float]] = {name: [] for name in SURFACES}  # steal does not count
    hits = {name: orjson.dumps(make("surfaces replay"))  # one second each to prime
            for name, (_, make, _, _) in SURFACES.items()}  # fmt: skip
    for name, (path, _, first, last) in SURFACES.items():  # one entry, primed once per surface
        asyncio.run(concurrent(1, app.port, [post(path, hits[name])], first, last))
    for round_ in range(rounds):
        for name, (path, make, first, last) in SURFACES.items():
            requests = [post(path, orjson.dumps(make(f"surfaces {round_} {name} {i}")))
                        for i in range(streams)]  # fmt: skip
            before = cpu_seconds(app.process.pid)
            asyncio.run(concurrent(streams, app.port, requests, first, last))
            cpu[name].append((cpu_seconds(app.process.pid) - before) / (streams * TOKENS) * 1e6)
            before = cpu_seconds(app.process.pid)
            rps[name].append(_wrk(app.port, path, hits[name], connections, seconds))
            hit_cpu[name].append((cpu_seconds(app.process.pid) - before)
                                 / (rps[name][-1] * seconds) * 1e6)  # fmt: skip
    rows = []
    for name in [name for name in SURFACES if name != "native"]:
        rows.append(_row(f"{name}: CPU µs per relayed token, {streams} streams", cpu["native"],
                         cpu[name], "{:.0f}"))  # fmt: skip
        rows.append(_row(f"{name}: cache hits per second, wrk -c{connections}", rps["native"],
                         rps[name], "{:.0f}"))  # fmt: skip
        rows.append(_row(f"{name}: CPU µs per cache hit", hit_cpu["native"], hit_cpu[name],
                         "{:.0f}"))  # fmt: skip
    return [
        (
            "surfaces: the OpenAI-, Ollama-, Anthropic-compatible and Responses APIs beside the "
            "native one, one app "
            "with its defaults (distinct prompts for the relay, one cached completion for hits)",
            ["measure", "native", "that surface", "surface/native"],
            rows,
        )
    ]


def auth(setup: Setup, rounds: int, seconds: float, connections: int) -> list[Table]:
    """Streamed cache hits per second with ``AUTH=required`` and a key with all three quotas on
    (so high that none refuses: each hit still takes and gives back a concurrency slot), beside
    ``AUTH=off``, on two apps with the defaults otherwise."""
    redis_url = f"redis://127.0.0.1:{setup.valkey.port}/0"
    argv = [servers.PYTHON, "-m", "app", "keys", "create", f"bench-{os.urandom(4).hex()}",
            "--rate-limit", str(10**9), "--token-limit", str(10**12),
            "--concurrency", str(10**6)]  # fmt: skip
    made = subprocess.run(argv, capture_output=True, text=True, check=True,
                          env={**os.environ, "REDIS_URL": redis_url})  # fmt: skip
    headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
    required = {**DEFAULTS, "AUTH": "required"}
    apps = {"off": setup.app(rate_limit_max=10**9, env=DEFAULTS),
            "required": setup.app(rate_limit_max=10**9, env=required)}  # fmt: skip
    body = orjson.dumps({"prompt": "auth bench", "options": {"sim_token_delay": 0}})
    rps: dict[str, list[float]] = {name: [] for name in apps}
    for app in apps.values():  # the one completion, cached before the first round
        _wrk(app.port, "/v1/chats/generate", body, 1, 1, headers)
    for round_ in range(rounds):  # in turn first: whichever goes first was measured slower
        for name, app in sorted(apps.items(), reverse=round_ % 2 == 1):
            rps[name].append(_wrk(app.port, "/v1/chats/generate", body, connections, seconds,
                                  headers))  # fmt: skip
    return [
        (
            "auth: streamed cache hits with AUTH=required, a key and every quota on (requests, "
            "tokens, concurrency), beside AUTH=off",
            ["measure", "AUTH=off", "AUTH=required", "required/off"],
            [
                _row(
                    f"requests per second, wrk -c{connections}",
                    rps["off"],
                    rps["required"],
                    "{:.0f}",
                )
            ],
        )
    ]


QUEUE_TOKENS = 20  # the queue section's generations
FLOOD = 20  # what client A sends at once


def queue(setup: Setup, rounds: int) -> list[Table]:
    """The GPU queue: one host with 2 slots (``OLLAMA_SLOTS``), client A sends ``FLOOD``
    generations at once and client B one just after; B's wait for its first token beside one
    generation's duration, the host's slot use over the run (sampled from the simulator, on a
    simulator of its own), and the time to first token of a lone request with the queue on
    beside off."""
    gpu = servers.simulator("--tokens", str(QUEUE_TOKENS), "--token-delay",
                            str(TOKEN_DELAY_SECONDS)).start()  # fmt: skip
    try:
        env = {**DEFAULTS, "OLLAMA_HOST": gpu.url, "IDENTITY_HEADER": "X-User"}
        slots = {**env, "OLLAMA_SLOTS": "2"}
        apps = {"off": setup.app(rate_limit_max=10**9, env=env),
                "on": setup.app(rate_limit_max=10**9, env=slots)}  # fmt: skip
        waits, batch_waits, durations, peaks, idle = [], [], [], [], []
        ttft: dict[str, list[float]] = {name: [] for name in apps}
        for round_ in range(rounds):
            wait, duration, peak, idle_share = asyncio.run(_flood(apps["on"].port, gpu, round_))
            waits.append(wait * 1e3)
            durations.append(duration * 1e3)
            peaks.append(peak)
            idle.append(idle_share * 100)
            batch_wait, duration, _, _ = asyncio.run(
                _flood(apps["on"].port, gpu, round_, priority="batch"))  # fmt: skip
            batch_waits.append(batch_wait * 1e3)
            durations.append(duration * 1e3)
            for name, app in sorted(apps.items(), reverse=round_ % 2 == 1):
                ttft[name] += [_ttft(1, app.port, f"queue {round_} {name} {i}") * 1e3
                               for i in range(5)]  # fmt: skip
    finally:
        gpu.stop()
    duration = median(durations)
    off, on = median(ttft["off"]), median(ttft["on"])
    return [
        (
            f"queue: one host with 2 slots, {QUEUE_TOKENS}-token generations; client A sends "
            f"{FLOOD} at once, client B one just after",
            ["measure", "value", "beside"],
            [
                ["B's wait for its first token, ms", f"{median(waits):.0f}",
                 f"one generation: {duration:.0f} ms; first come, first served: "
                 f"~{FLOOD // 2} generations, {FLOOD // 2 * duration:.0f} ms"],
                ["B's wait when A's flood is X-Priority: batch, ms", f"{median(batch_waits):.0f}",
                 f"one generation: {duration:.0f} ms"],
                ["generations running at once, most in any round", f"{max(peaks)}",
                 "slots: 2"],
                ["a slot idle while a generation waited, % of samples", f"{median(idle):.1f}",
                 "sampled every 5 ms"],
                ["a lone request's time to first token, ms", f"{on:.1f} (queue on)",
                 f"{off:.1f} (off): {on - off:+.1f} ms"],
            ],
        )
    ]  # fmt: skip


async def _flood(port: int, gpu: servers.Server, label: int, priority: str = "interactive"
                 ) -> tuple[float, float, int, float]:  # fmt: skip
    """One round (A's flood in the ``priority`` band): B's wait, a generation's duration, the
    most running at once, and the share of samples in which a slot was idle while a generation
    waited."""

    def ask(user: str, prompt: str, band: str = "interactive") -> bytes:
        body = orjson.dumps({"prompt": prompt, "options": {"sim_tokens": QUEUE_TOKENS}})
        request = post("/v1/chats/generate", body)
        head = f"\r\nX-User: {user}\r\nX-Priority: {band}\r\n"
        return request.replace(b"\r\n", head.encode(), 1)

    marker = b"\nevent: token\n"
    samples: list[tuple[int, int]] = []  # (running, started)
    async with httpx.AsyncClient(base_url=gpu.url) as http:
        before = (await http.get("/_sim/counters")).json()["started"]
        sampling = True

        async def sample() -> None:
            while sampling:
                counters = (await http.get("/_sim/counters")).json()
                samples.append((counters["running"], counters["started"] - before))
                await asyncio.sleep(0.005)

        sampler = asyncio.create_task(sample())
        flood = [asyncio.create_task(stream_once(
            port, ask("alice", f"q {label} {priority} a {i}", priority), marker, DONE))
            for i in range(FLOOD)]  # fmt: skip
        await asyncio.sleep(0.05)
        b = await stream_once(port, ask("bob", f"q {label} {priority} b"), marker, DONE)
        a = await asyncio.gather(*flood)
        sampling = False
        await sampler
    first_two = sorted(a, key=lambda t: t.first_token_seconds)[:2]  # never waited
    duration = median([t.total_seconds - t.first_token_seconds for t in first_two])
    waiting = [running for running, started in samples if started < FLOOD + 1 and started]
    idle = sum(running < 2 for running in waiting) / max(1, len(waiting))
    return b.first_token_seconds, duration, max(r for r, _ in samples), idle


def _redis_commands(valkey: servers.Server) -> int:
    """Commands clients sent (round trips): Valkey counts the GET, INCR and EXPIRE that the
    limiter's script runs inside as commands too, and this path sends none of its own."""
    client = redis.Redis(port=valkey.port)
    try:
        stats: dict[str, dict[str, int]] = client.info("commandstats")
    finally:
        client.close()
    inside_scripts = ("cmdstat_get", "cmdstat_incr", "cmdstat_expire")  # what the Lua calls
    sent = sum(s["calls"] for name, s in stats.items() if name not in inside_scripts)
    return sent - sum(s["calls"] for name, s in stats.items() if name == "cmdstat_info")


def _pinned(core: int = APP_CORE) -> list[str]:
    """The prefix that runs a command on ``core`` (nothing on a one-core machine)."""
    return ["taskset", "-c", str(core)] if PINNED else []


def _ttft(count: int, port: int, label: str, *, direct: bool = False) -> float:
    """Median time to first token of ``count`` concurrent streams of distinct prompts."""
    path = "/api/generate" if direct else "/v1/chats/generate"
    first, last = (b'"done":false', b'"done":true') if direct else (b"\nevent: token\n", DONE)
    requests = [
        post(path, orjson.dumps({"model": "llama3.2", "prompt": f"bench {label} {i}"}))
        for i in range(count)
    ]
    timings = asyncio.run(concurrent(count, port, requests, first, last))
    return median([t.first_token_seconds for t in timings])


def _row(label: str, baseline: list[float], ours: list[float], fmt: str) -> list[str]:
    base, our = median(baseline), median(ours)
    ratio = f"{our / base:.2f}x" if base >= 0.05 else "-"  # no ratio to nothing
    return [label, fmt.format(base), fmt.format(our), ratio]


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print(f"\n{title}" if title else "")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for index, row in enumerate([header, *rows]):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("| " + " | ".join(cells) + " |")
        if index == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


MODEL_TOKENS = 64  # per answer of the real model


def model(setup: Setup, rounds: int) -> list[Table]:
    """A real model (llama.cpp's server with Gemma 3 270M, one thread on the load core): one
    stream's time to first token and tokens per second straight from llama-server and through
    the service (the native API, cache off), a distinct greedy prompt per round, alternated."""
    llama = servers.llama_server("--threads", "1", "--parallel", "1")
    llama.argv = [*_pinned(LOAD_CORE), *llama.argv]
    llama.start("/health", timeout_seconds=120)
    setup.apps.append(llama)
    app = setup.app(env={**DEFAULTS, "OLLAMA_HOST": "", "CACHE_TTL": "0",
                         "UPSTREAMS": f"{llama.url};engine=llamacpp"})  # fmt: skip
    greedy = {"temperature": 0, "max_tokens": MODEL_TOKENS}

    def direct(prompt: str) -> bytes:
        body = {"model": servers.GEMMA, "messages": [{"role": "user", "content": prompt}],
                "stream": True, **greedy}  # fmt: skip
        return post("/v1/chat/completions", orjson.dumps(body))

    def through(prompt: str) -> bytes:
        options = {"temperature": 0, "num_predict": MODEL_TOKENS}
        body = {"model": servers.GEMMA, "prompt": prompt, "options": options, "cache": False}
        return post("/v1/chats/generate", orjson.dumps(body))

    said = httpx.post(f"{llama.url}/v1/chat/completions", timeout=60, json={
        "model": servers.GEMMA, "messages": [{"role": "user", "content": "model bench"}],
        **greedy}).json()  # fmt: skip
    assert said["usage"]["completion_tokens"] == MODEL_TOKENS, said  # the rate's numerator
    ttft: dict[str, list[float]] = {"direct": [], "through": []}
    rate: dict[str, list[float]] = {"direct": [], "through": []}
    for round_ in range(rounds):
        # a prompt of each way's own, of one length, its difference first: llama.cpp reuses the
        # longest prefix it has seen, which would favour whichever asks second
        ways = [("direct", llama.port, direct(f"{round_}a model bench: a bottle"),
                 b'"content":"', b"data: [DONE]"),
                ("through", app.port, through(f"{round_}b model bench: a bottle"),
                 b"\nevent: token\n", DONE)]  # fmt: skip
        for name, port, request, first, last in ways[:: 1 if round_ % 2 else -1]:
            (timing,) = asyncio.run(concurrent(1, port, [request], first, last))
            ttft[name].append(timing.first_token_seconds * 1e3)
            rate[name].append((MODEL_TOKENS - 1)
                              / (timing.total_seconds - timing.first_token_seconds))  # fmt: skip
    added = [t - d for t, d in zip(ttft["through"], ttft["direct"], strict=True)]
    return [
        (
            f"model: Gemma 3 270M on llama.cpp's server (one thread, load core), one stream of "
            f"{MODEL_TOKENS} tokens, greedy, a new prompt each round",
            ["measure", "llama-server direct", "through the service", "service/direct"],
            [
                _row("time to first token, ms", ttft["direct"], ttft["through"], "{:.1f}"),
                ["added time to first token, ms", "", f"{median(added):.1f}", ""],
                _row("tokens per second", rate["direct"], rate["through"], "{:.1f}"),
            ],
        )
    ]


CONVERSATIONS, TURNS = 4, 5  # the affinity section's conversations at once, and their turns
PAUSE_SECONDS = 2.0  # the most a conversation pauses between turns (a person reading, tools)


def affinity(setup: Setup, rounds: int) -> list[Table]:
    """Conversation affinity with a real model: two llama-servers (Gemma 3 270M, one thread and
    two slots each, so that each host can keep the prompts of half the conversations, and
    ``--cache-ram 0`` so that a host's prompt cache is its slots', not a copy in RAM that any
    prompt can be restored from). ``CONVERSATIONS`` conversations at once, each with a system
    prompt of its own of about 1,500 tokens and ``TURNS`` turns, pausing up to
    ``PAUSE_SECONDS`` at random between turns, so each keeps both hosts busy for the others;
    through the service with affinity on and with plain least-busy routing
    (``AFFINITY_TTL=0``), the service's cache off, the two alternated by round. Each turn
    answers 16 tokens greedily; the next turn carries a fixed reply in its place (the engine's
    cache then holds the prompt up to that reply). The figures: the median time to first token
    of turns 2 to ``TURNS`` over every conversation, and the prompt tokens the engines read
    (``llamacpp:prompt_tokens_total``: cached prefixes are not read)."""
    flags = ("--parallel", "2", "--threads", "1", "--cache-ram", "0", "--ctx-size", "8192")
    hosts = [servers.llama_server(*flags) for _ in range(2)]
    for host in hosts:
        host.start("/health", timeout_seconds=120)
        setup.apps.append(host)
    env = {**DEFAULTS, "OLLAMA_HOST": "", "CACHE_TTL": "0", "UPSTREAM_TIMEOUT": "600",
           "UPSTREAMS": ",".join(f"{h.url};engine=llamacpp" for h in hosts)}  # fmt: skip
    apps = {
        "affinity": setup.app(env=env),
        "least busy": setup.app(env={**env, "AFFINITY_TTL": "0"}),
    }
    ttft: dict[str, list[float]] = {name: [] for name in apps}
    read: dict[str, float] = dict.fromkeys(apps, 0.0)
    for round_ in range(rounds):
        for name, app in sorted(apps.items(), reverse=round_ % 2 == 1):
            before = sum(_prompt_tokens_read(h) for h in hosts)
            ttft[name] += asyncio.run(_conversations(app.port, f"{name} {round_}"))
            read[name] += sum(_prompt_tokens_read(h) for h in hosts) - before
    on, off = median(ttft["affinity"]), median(ttft["least busy"])
    return [
        (
            f"affinity: two llama-servers (Gemma 3 270M, 2 slots, 1 thread each), "
            f"{CONVERSATIONS} conversations of {TURNS} turns at once, a 1,500-token system "
            f"prompt each, up to {PAUSE_SECONDS:g} s between turns; {rounds} round(s)",
            ["measure", "least busy", "affinity", "least busy/affinity"],
            [["time to first token, turns 2-5 (median), ms", f"{off:.0f}", f"{on:.0f}",
              f"{off / on:.1f}x"],
             ["prompt tokens the engines read, per round", f"{read['least busy'] / rounds:.0f}",
              f"{read['affinity'] / rounds:.0f}",
              f"{read['least busy'] / read['affinity']:.1f}x"]],
        )
    ]  # fmt: skip


def _prompt_tokens_read(host: servers.Server) -> float:
    """The prompt tokens a llama-server has read, its cached prefixes not counted."""
    text = httpx.get(host.url + "/metrics", timeout=10).text
    found = re.search(r"^llamacpp:prompt_tokens_total (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


async def _conversations(port: int, label: str) -> list[float]:
    """``CONVERSATIONS`` conversations at once; the times to first token of their later
    turns."""

    async def converse(n: int) -> list[float]:
        rules = " ".join(f"Rule {i} of reviewer {label} {n}: check part {i} against the "
                         f"specification before approving it." for i in range(62))  # fmt: skip
        messages: list[dict[str, str]] = [{"role": "system", "content": rules}]
        later = []
        for turn in range(TURNS):
            messages.append({"role": "user", "content": f"Turn {turn}: is part {turn} done?"})
            body = {"model": servers.GEMMA, "messages": messages,
                    "options": {"temperature": 0, "num_predict": 16}}  # fmt: skip
            request = post("/v1/chats/generate", orjson.dumps(body))
            timing = await stream_once(port, request, b"\nevent: token\n", DONE)
            if turn:
                later.append(timing.first_token_seconds * 1e3)
            messages.append({"role": "assistant", "content": "Noted; checking it now."})
            await asyncio.sleep(random.uniform(0, PAUSE_SECONDS))
        return later

    found = await asyncio.gather(*(converse(n) for n in range(CONVERSATIONS)))
    return [ms for conversation in found for ms in conversation]


def tracing(setup: Setup, rounds: int, streams: int, seconds: float, connections: int
            ) -> list[Table]:  # fmt: skip
    """What tracing costs: the service with its defaults beside the same with OpenTelemetry
    on (every request sampled, spans and metrics exported over OTLP/HTTP to a receiver in its
    own process on the load core): CPU per relayed token, and streamed cache hits per second.
    A second app with tracing off shows how far two identical apps differ in the same run."""
    port = servers.free_port()
    receiver = servers.Server([*_pinned(LOAD_CORE), servers.PYTHON, "-m", "harness.otlp",
                               str(port)], port).start(ready_path=None)  # fmt: skip
    setup.apps.append(receiver)
    traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_TRACES_SAMPLER": "always_on",
              "OTEL_SERVICE_NAME": "bib-bench"}  # fmt: skip
    apps = {"off": setup.app(env=DEFAULTS), "on": setup.app(env={**DEFAULTS, **traced}),
            "off again": setup.app(env=DEFAULTS)}  # fmt: skip
    body = orjson.dumps({"prompt": "tracing bench", "options": {"sim_token_delay": 0}})
    for app in apps.values():  # each its own entry's copy, as a hit finds it
        asyncio.run(concurrent(1, app.port, [post("/v1/chats/generate", body)], b"", DONE))
    cpu: dict[str, list[float]] = {name: [] for name in apps}
    rps: dict[str, list[float]] = {name: [] for name in apps}
    per_hit: dict[str, list[float]] = {name: [] for name in apps}  # others' load skews it less
    for round_ in range(rounds):
        order = list(apps.items())
        for name, app in order[round_ % 3 :] + order[: round_ % 3]:  # each first in turn
            assert app.process is not None
            before = cpu_seconds(app.process.pid)
            _ttft(streams, app.port, f"tracing {round_} {name}")
            cpu[name].append((cpu_seconds(app.process.pid) - before) / (streams * TOKENS) * 1e6)
            before = cpu_seconds(app.process.pid)
            rate = _wrk(app.port, "/v1/chats/generate", body, connections, seconds)
            rps[name].append(rate)
            per_hit[name].append((cpu_seconds(app.process.pid) - before) / (rate * seconds) * 1e6)
    return [
        (
            "tracing: the service with OpenTelemetry on (100 % sampled, exported over OTLP/HTTP "
            "to a local receiver) beside it off, the defaults otherwise",
            ["measure", "tracing off", "tracing on", "on/off", "another off app/off"],
            [
                [*_row(label, figures["off"], figures["on"], fmt),
                 _row(label, figures["off"], figures["off again"], fmt)[3]]
                for label, figures, fmt in (
                    (f"{streams} streams: CPU µs per relayed token", cpu, "{:.1f}"),
                    (f"streamed cache hits per second, wrk -c{connections}", rps, "{:.0f}"),
                    ("CPU µs per streamed cache hit", per_hit, "{:.0f}"),
                )
            ],
        )
    ]  # fmt: skip


SECTIONS = ("relay", "replay", "surfaces", "auth", "queue", "capacity", "live", "soak", "routing",
            "model", "affinity", "tracing")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per figure")
    parser.add_argument("--streams", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--seconds", type=float, default=2.0, help="per throughput round")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--surface-streams", type=int, default=50, help="relayed per surface")
    parser.add_argument("--capacity", type=int, default=5000, help="streams held open at once")
    parser.add_argument("--live", type=int, default=5000, help="generations relaying at once")
    parser.add_argument("--live-seconds", type=float, default=10.0, help="probing /livez")
    parser.add_argument("--soak-rounds", type=int, default=32)
    parser.add_argument("--soak-streams", type=int, default=300, help="per soak round")
    parser.add_argument("--route-generations", type=int, default=60, help="started at once")
    parser.add_argument("--route-seconds", type=float, default=12.0)
    parser.add_argument("--affinity-rounds", type=int, default=1, help="about 2 minutes each")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=SECTIONS)
    args = parser.parse_args()
    if PINNED:  # this process (the asyncio load client), Valkey and the simulator
        os.sched_setaffinity(0, {LOAD_CORE})
    pinning = f"apps and floors on core {APP_CORE}, load on core {LOAD_CORE}"
    print(f"{TOKENS}-token generations, {TOKEN_DELAY_SECONDS * 1e3:.0f} ms per token, "
          f"one uvicorn worker per app, medians of {args.rounds} rounds; "
          f"{pinning if PINNED else 'not pinned (one core)'}", flush=True)  # fmt: skip
    runs = {
        "relay": lambda setup: relay(setup, args.rounds, args.streams),
        "replay": lambda setup: replay(setup, args.rounds, args.seconds, args.connections),
        "surfaces": lambda setup: surfaces(setup, args.rounds, args.surface_streams,
                                           args.seconds, args.connections),
        "auth": lambda setup: auth(setup, args.rounds, args.seconds, args.connections),
        "queue": lambda setup: queue(setup, args.rounds),
        "capacity": lambda setup: capacity(setup, args.capacity),
        "live": lambda setup: live(setup, args.live, args.live_seconds),
        "soak": lambda setup: soak(setup, args.soak_rounds, args.soak_streams),
        "routing": lambda setup: hosts(setup, args.route_generations, args.rounds,
                                       args.route_seconds),
        "model": lambda setup: model(setup, args.rounds),
        "affinity": lambda setup: affinity(setup, args.affinity_rounds),
        "tracing": lambda setup: tracing(setup, args.rounds, max(args.streams), args.seconds,
                                         args.connections),
    }  # fmt: skip
    setup = Setup()
    try:
        for section in args.sections:  # each printed as it ends: a late failure loses nothing
            for table in runs[section](setup):
                print_table(*table)
            print(flush=True)
    finally:
        setup.stop()


if __name__ == "__main__":
    main()
