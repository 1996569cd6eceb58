"""The Dockerfile and compose.yaml built and run for real with podman, over real sockets.

Stand-ins (``harness/standins``): no container registry is reachable here, so the images the
project's files name (python:3.11-slim, redis:7-alpine, ollama/ollama) are built here from
Debian bookworm and the project's own Ollama simulator, and tagged with those names. What is
built and run is the project's Dockerfile and compose.yaml as they are; the official images
themselves, and Ollama on a GPU, are not tested. Health checks run when these tests run them
(``podman healthcheck run``): on a machine with systemd, its timers would.
"""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import containers
from harness.containers import APP, IMAGES, ROOT, STANDINS, Podman
from harness.servers import free_port, sample
from tests.support.bodies import GENERATE
from tests.support.settings import compose
from tests.support.sse import events

pytestmark = [pytest.mark.containers, pytest.mark.system]

GRACE = 2  # SHUTDOWN_GRACE of the app containers started here
NETWORK = "bib-test"
PODMAN_COMPOSE = str(Path(sys.executable).parent / "podman-compose")


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    with containers.podman_store() as podman:
        containers.build_images(podman)
        yield podman


def start_app(podman: Podman, name: str, **env: str) -> str:
    """The project's image on the test network, published on a loopback port, once ready."""
    port = free_port()
    settings = {"REDIS_URL": "redis://redis:6379/0", "OLLAMA_HOST": "http://ollama:11434",
                "SHUTDOWN_GRACE": str(GRACE), **env}  # fmt: skip
    variables = [arg for item in settings.items() for arg in ("-e", "=".join(item))]
    podman("run", "-d", "--name", name, "--network", NETWORK,
           "-p", f"127.0.0.1:{port}:8000", *variables, APP)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not ready(url):
        assert time.monotonic() < deadline, podman("logs", name).stderr
        time.sleep(0.2)
    return url


def ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(scope="module")
def app(podman: Podman) -> str:
    """The Redis and Ollama stand-ins and the project's image with two workers."""
    podman("network", "create", NETWORK)
    podman("run", "-d", "--name", "redis", "--network", NETWORK, IMAGES["redis"].name)
    podman("run", "-d", "--name", "ollama", "--network", NETWORK, IMAGES["ollama"].name)
    return start_app(podman, "app", WEB_CONCURRENCY="2")


def curl(url: str, body: str) -> subprocess.Popen[bytes]:
    command = ["curl", "--silent", "--no-buffer", "--data", body, url + GENERATE]
    return subprocess.Popen(command, stdout=subprocess.PIPE)


def stream(url: str, prompt: str) -> list[str]:
    """The event types of one stream as curl shows it, after checking it is well formed."""
    with curl(url, f'{{"prompt": "{prompt}"}}') as reading:
        body, _ = reading.communicate(timeout=60)
    received = events(body)
    assert received[-1].type == "done", body
    return [str(received[0].json()["cached"]), *(e.type for e in received)]


def workers(podman: Podman, container: str) -> int:
    """uvicorn's worker processes in the container."""
    return podman("top", container, "args").stdout.count("multiprocessing.spawn")


def streams_then_replays(url: str, prompt: str) -> None:
    """A stream to curl from a new generation, then the same events replayed from the cache."""
    fresh = stream(url, prompt)
    assert fresh[:3] == ["False", "start", "token"]
    assert stream(url, prompt) == ["True", *fresh[1:]]


def test_the_image_runs_as_the_unprivileged_user_with_its_workers(podman: Podman, app: str) -> None:
    assert podman("exec", "app", "id", "-u").stdout.strip() == "10001"
    users = podman("top", "app", "user").stdout.split()[1:]
    assert set(users) == {"bib"}
    assert workers(podman, "app") == 2  # WEB_CONCURRENCY
    assert podman("logs", "app").stderr.count("Application startup complete") == 2


def test_the_image_streams_over_curl_and_replays_from_the_cache(app: str) -> None:
    streams_then_replays(app, "Hi from a container")


def test_readiness_and_the_images_own_health_check_pass(podman: Podman, app: str) -> None:
    readiness = httpx.get(app + "/readyz").json()
    assert readiness["status"] == "pass"
    assert {"redis:responseTime", "ollama:responseTime"} <= readiness["checks"].keys()
    assert "/livez" in podman.inspect("app", "{{.Config.Healthcheck.Test}}")
    podman.wait_healthy("app", seconds=5)
    assert podman.inspect("app", "{{.State.Health.Status}}") == "healthy"


# In the container: each worker's own count of the requests below, from its file alone.
PER_WORKER = """
import glob
from prometheus_client.multiprocess import MultiProcessCollector
for file in glob.glob("/tmp/bib-metrics/counter_*.db"):
    print(sum(s.value for m in MultiProcessCollector.merge([file]) for s in m.samples
              if s.name == "bib_requests_total" and s.labels == %r))
"""


def test_metrics_add_up_across_the_workers(podman: Podman, app: str) -> None:
    route = {"method": "POST", "route": GENERATE, "status": "200"}
    quick = {"stream": False, "options": {"sim_tokens": 2, "sim_token_delay": 0.01}}
    for i in range(6):  # each on a connection of its own, taken by either worker
        httpx.post(app + GENERATE, json={"prompt": f"metrics {i}", **quick}, timeout=30)
    scrapes = [httpx.get(app + "/metrics").text for _ in range(6)]  # answered by either worker
    totals = {sample(text, "bib_requests_total", **route) for text in scrapes}
    counts = podman("exec", "app", "python", "-c", PER_WORKER % route).stdout.split()
    assert len(counts) == 2  # WEB_CONCURRENCY
    assert totals == {sum(map(float, counts))}
    assert totals.pop() >= 6


def test_podman_stop_drains_an_open_stream(podman: Podman, app: str) -> None:
    url = start_app(podman, "draining")
    body = '{"prompt": "long", "options": {"sim_tokens": 400, "sim_token_delay": 0.05}}'
    with curl(url, body) as reading:
        assert reading.stdout is not None
        while reading.stdout.readline().strip() != b"event: token":
            pass
        started = time.monotonic()
        podman("stop", "--time", str(GRACE + 20), "draining", timeout=GRACE + 30)
        stopped = time.monotonic() - started
        rest, _ = reading.communicate(timeout=10)
    assert events(rest)[-1].json()["error"] == "shutting_down"
    assert GRACE <= stopped < GRACE + 5
    assert podman.inspect("draining", "{{.State.ExitCode}}") == "0"  # not killed


def test_compose_comes_up_in_dependency_order_serves_and_goes_down(podman: Podman) -> None:
    """As a user brings it up (podman-compose), with an override that only points the images at
    the stand-ins. podman 4.3 cannot wait for a health status (podman-compose says so and
    starts a dependent once its dependencies run), so the order checked is that of starts."""
    services = compose()["services"]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", 8000)) != 0, "compose.yaml publishes port 8000"
    build = " ".join(["--format", "docker", *podman.certificates()])
    files = ["-f", str(ROOT / "compose.yaml"), "-f", str(STANDINS / "compose.override.yaml")]
    command = [PODMAN_COMPOSE, "-p", "bib", *files, "--podman-build-args", build]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*command, *args], env=podman.env, capture_output=True,
                              text=True, timeout=600, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    run("up", "-d", "--build")
    for service in ("redis", "ollama", "app"):
        podman.wait_healthy(f"bib_{service}_1")
    pull = "bib_ollama-pull_1"
    assert podman.inspect(pull, "{{.State.Status}} {{.State.ExitCode}}") == "exited 0"
    assert podman("logs", pull).stdout.split()[-1] == "success"
    shown = "{{.Name}} {{.Status}} {{.ContainerExitCode}}"
    happened = podman("events", "--stream=false", "--filter", "type=container", "--format", shown)
    first: dict[str, int] = {}  # where each event first happened
    for index, event in enumerate(happened.stdout.splitlines()):
        first.setdefault(event.removeprefix("bib_"), index)

    def before(*names: str) -> bool:
        return all(first[a] < first[b] for a, b in itertools.pairwise(names))

    assert before("redis_1 start 0", "app_1 start 0"), happened.stdout
    assert before("ollama_1 start 0", "ollama-pull_1 died 0", "app_1 start 0"), happened.stdout

    assert workers(podman, "bib_app_1") == int(services["app"]["environment"]["WEB_CONCURRENCY"])
    streams_then_replays("http://localhost:8000", "Hi")

    began = time.monotonic()
    down = run("down")
    assert time.monotonic() - began < int(services["app"]["stop_grace_period"].removesuffix("s"))
    assert "SIGKILL" not in down.stderr  # each stopped within its grace period
    left = podman("ps", "--all", "--quiet", "--filter", "label=io.podman.compose.project=bib")
    assert left.stdout == ""
