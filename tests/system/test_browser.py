"""The playground in a real headless Chromium: an EventSource streams, replays, stops after
`done`, resumes through Last-Event-ID after its connection is cut, and a 429 is explained."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from playwright.async_api import Browser, Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout

from harness import servers
from harness.servers import Server, free_port
from tests.support.bodies import simulator_text
from tests.support.keys import made_key as made
from tests.support.sse import fetch_from

pytestmark = [pytest.mark.anyio, pytest.mark.system]

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]  # fmt: skip


class CuttableProxy:
    """A TCP proxy in front of the app whose connections the test can cut mid-stream."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target_port = target_port
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self._target_port
        )
        self._writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def aclose(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS
        )
        yield launched
        await launched.close()


async def open_playground(browser: Browser, base_url: str) -> tuple[Page, list[str]]:
    """The page, and the list of requests it makes for an events URL (reconnects included)."""
    page = await browser.new_page()
    event_requests: list[str] = []
    page.on("request", lambda r: event_requests.append(r.url) if "/events" in r.url else None)
    await page.goto(f"{base_url}/playground")
    return page, event_requests


async def ask(page: Page, prompt: str, options: dict[str, Any]) -> None:
    await page.fill("#prompt", prompt)
    await page.fill("#options", orjson.dumps(options).decode())
    await page.click("#send")


async def finished(page: Page, service: Server) -> dict[str, Any]:
    """The page's counters once its answer is done; if it never is, what the page and the
    service said instead."""
    try:
        await page.wait_for_function("window.bib.doneAt !== null", timeout=20_000)
    except PlaywrightTimeout:
        said = [await page.text_content(f"#{part}") for part in ("status", "problem")]
        raise AssertionError(f"not done: {said} {await page.evaluate('window.bib')}\n"
                             f"{service.output()}") from None  # fmt: skip
    state: dict[str, Any] = await page.evaluate("window.bib")
    return state


async def test_streams_replays_and_does_not_reconnect_after_done(
    browser: Browser, start_service: Callable[..., Server], simulator: Server
) -> None:
    service = start_service(RESUME_GRACE="5", LOG_LEVEL="info")
    page, event_requests = await open_playground(browser, service.url)
    prompt = f"browser {uuid.uuid4().hex}"
    options = {"sim_tokens": 8, "sim_token_delay": 0.2}
    expected = await simulator_text(simulator, {"prompt": prompt, "options": options})

    await ask(page, prompt, options)
    live = await finished(page, service)
    assert live["tokens"] == 8
    assert live["cached"] is False
    assert live["doneAt"] - live["firstTokenAt"] > 1000  # token by token, 200 ms apart
    assert await page.text_content("#answer") == expected
    await asyncio.sleep(3)  # longer than the stream's retry: an EventSource would be back
    assert len(event_requests) == 1

    await ask(page, prompt, options)
    replay = await finished(page, service)
    assert replay["cached"] is True
    assert await page.text_content("#answer") == expected
    assert await page.text_content("#status") == "Done (from the cache)."


async def test_a_cut_connection_resumes_with_the_exact_text(
    browser: Browser, start_service: Callable[..., Server], simulator: Server
) -> None:
    service = start_service(RESUME_GRACE="5", LOG_LEVEL="info")
    proxy = await CuttableProxy(service.port).start()
    try:
        page, event_requests = await open_playground(browser, f"http://127.0.0.1:{proxy.port}")
        prompt = f"cut {uuid.uuid4().hex}"
        options = {"sim_tokens": 20, "sim_token_delay": 0.2}
        expected = await simulator_text(simulator, {"prompt": prompt, "options": options})
        await ask(page, prompt, options)
        await page.wait_for_function("window.bib.tokens >= 3", timeout=10_000)
        proxy.cut()
        state = await finished(page, service)
        assert await page.text_content("#answer") == expected
        assert state["tokens"] == 20  # nothing repeated, nothing lost
        assert state["starts"] == 1  # resumed, not restarted
        assert len(event_requests) == 2  # the reconnect, with Last-Event-ID
    finally:
        await proxy.aclose()


async def test_the_rate_limit_is_explained(
    browser: Browser, start_service: Callable[..., Server]
) -> None:
    # the playground creates a generation, then opens its events: with the tests' RESUME_GRACE
    # of 0 a generation nobody has opened yet may be cancelled in that gap, as documented
    service = start_service(RATE_LIMIT_MAX="1", RESUME_GRACE="5", LOG_LEVEL="info")
    page, _ = await open_playground(browser, service.url)
    await ask(page, "first", {})
    await finished(page, service)
    await ask(page, "second", {})
    await page.wait_for_function("document.getElementById('problem').textContent !== ''")
    problem = await page.text_content("#problem")
    assert problem is not None
    assert problem.startswith("Rate limited: Rate limit of 1 requests per 60 seconds exceeded")
    assert "You can ask again in" in problem


async def test_the_key_field_lets_the_page_in(
    browser: Browser, start_service: Callable[..., Server], redis_url: str
) -> None:
    service = start_service(AUTH="required", RESUME_GRACE="5")  # see the rate-limit test
    key = made(redis_url, "page")
    page, _ = await open_playground(browser, service.url)
    await ask(page, f"keyless {uuid.uuid4()}", {})
    await page.wait_for_function("document.getElementById('problem').textContent !== ''")
    assert "Enter a valid API key" in (await page.text_content("#problem") or "")
    await page.fill("#key", key)
    await ask(page, f"keyed {uuid.uuid4()}", {"sim_tokens": 3})
    state = await finished(page, service)
    assert state["tokens"] == 3


async def test_the_page_says_its_place_in_the_queue(
    browser: Browser, start_service: Callable[..., Server]
) -> None:
    gpu = servers.simulator("--tokens", "40", "--token-delay", "0.05").start()
    try:
        service = start_service(OLLAMA_HOST=gpu.url, OLLAMA_SLOTS="1", RESUME_GRACE="5")
        busy = asyncio.create_task(
            fetch_from(
                service, "POST", "/v1/chats/generate", json={"prompt": f"busy {uuid.uuid4()}"}
            )
        )
        await asyncio.sleep(0.3)
        page, _ = await open_playground(browser, service.url)
        await ask(page, f"waiting {uuid.uuid4()}", {})
        await page.wait_for_function(
            "document.getElementById('status').textContent.startsWith('Waiting for the GPU')"
        )
        assert await page.text_content("#status") == "Waiting for the GPU: you are next…"
        await finished(page, service)
        await busy
    finally:
        gpu.stop()
