"""The playground in a real headless Chromium: a conversation whose answers stream through an
EventSource, replay from the cache, stop after `done` and resume through Last-Event-ID after a
cut; the model picker; the queue, quotas, errors and keys explained; a hostile answer rendered
inert under the page's own Content-Security-Policy; screenshots at a phone's and a wide screen's
width, kept in ``.run/artifacts/`` for review.

The page's policy forbids eval, which Playwright's ``wait_for_function`` needs, so these tests
poll with ``evaluate`` (``until``) and leave the policy in force."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from playwright.async_api import Browser, Page, Request, async_playwright

from harness import servers
from harness.servers import Server, free_port
from tests.support.bodies import simulator_chat_text
from tests.support.keys import made_key as made
from tests.support.settings import ROOT
from tests.support.sse import fetch_from

pytestmark = [pytest.mark.anyio, pytest.mark.system]

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]  # fmt: skip
ARTIFACTS = ROOT / ".run" / "artifacts"
# a model's answer that tries every way into the page; any success sets window.pwned
HOSTILE = (
    '<img src=x onerror="window.pwned=1"> <script>window.pwned=2</script>\n\n'
    "[click me](javascript:window.pwned=3) and [data](data:text/html,<script>alert(1)</script>)\n\n"
    '<a href="javascript:window.pwned=4">raw link</a>\n<b onmouseover="window.pwned=5">bold</b>\n'
    '<iframe src="javascript:window.pwned=6"></iframe><svg onload="window.pwned=7"></svg>\n\n'
    "**safe bold** and [the docs](https://example.com/docs)\n\n"
    "```html\n<script>window.pwned=8</script>\n```"
)
MARKDOWN = (
    "## How to stream\n\nThe service relays **each token** as it comes, with `EventSource`:\n\n"
    "1. start a generation\n2. follow its events\n   - resume with `Last-Event-ID`\n\n"
    "```js\nconst source = new EventSource(events);\n"
    'source.addEventListener("token", (e) => show(JSON.parse(e.data).text));\n```\n\n'
    "> Cached answers replay *as fast as you read*. See https://example.com/bib."
)


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


@dataclass
class Playground:
    """The page, with what it asked: each events URL it opened (reconnects included), each
    body it posted to start a generation, and any script error it raised."""

    page: Page
    events: list[str] = field(default_factory=list)
    posted: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def saw(self, request: Request) -> None:
        if "/events" in request.url:
            self.events.append(request.url)
        elif request.url.endswith("/v1/chats/generations") and request.method == "POST":
            self.posted.append(orjson.loads(request.post_data or "null"))


async def open_playground(browser: Browser, base_url: str, *, width: int = 1280,
                          dark: bool = False) -> Playground:  # fmt: skip
    context = await browser.new_context(viewport={"width": width, "height": 860},
                                        color_scheme="dark" if dark else "light")  # fmt: skip
    playground = Playground(await context.new_page())
    playground.page.on("request", playground.saw)
    playground.page.on("pageerror", lambda error: playground.errors.append(str(error)))
    await playground.page.goto(f"{base_url}/playground")
    await until(playground.page, "document.getElementById('model').options.length > 1")
    return playground


async def until(page: Page, expression: str, timeout_seconds: float = 20.0) -> None:
    """Waits for ``expression`` to be true in the page, or says what the page says."""
    deadline = time.monotonic() + timeout_seconds
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            said = [await page.text_content(f"#{part}") for part in ("status", "problem")]
            bib = await page.evaluate("window.bib")
            raise AssertionError(f"never true: {expression}; the page says {said}, {bib}")
        await asyncio.sleep(0.05)


async def opened(page: Page, *details: str) -> None:
    """Opens the folded ``details`` (by id), as a person would: a click on each summary."""
    for name in details:
        if not await page.evaluate(f"document.getElementById('{name}').open"):
            await page.click(f"#{name} > summary")


async def ask(page: Page, question: str, options: dict[str, Any] | None = None) -> None:
    """Types ``question`` and presses Enter; ``options`` go in the JSON options box first."""
    if options is not None:
        await opened(page, "settings", "advanced")
        await page.fill("#options", orjson.dumps(options).decode())
    await page.fill("#prompt", question)
    await page.press("#prompt", "Enter")


async def finished(page: Page, service: Server) -> dict[str, Any]:
    """The page's counters once its answer is done; if it never is, what the service said."""
    try:
        await until(page, "window.bib.doneAt !== null")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{service.output()}") from None
    state: dict[str, Any] = await page.evaluate("window.bib")
    return state


async def facts(page: Page) -> list[str]:
    """The badges under the latest answer."""
    said: list[str] = await page.evaluate(
        "[...document.querySelectorAll('.assistant:last-child .fact')].map(f => f.textContent)"
    )
    return said


def shows(fact: str) -> str:
    """An expression: the latest answer has this badge (they are painted a frame later)."""
    return ("[...document.querySelectorAll('.assistant:last-child .fact')]"
            f".some(f => f.textContent === {orjson.dumps(fact).decode()})")  # fmt: skip


async def engine_text(simulator: Server, asked: dict[str, Any]) -> str:
    """What the engine itself answers the native chat request ``asked`` of the service's
    default model (the service sends its content as Ollama's body): the reference text."""
    body = {"model": "llama3.2", **asked}
    return await asyncio.to_thread(simulator_chat_text, simulator, body)


async def test_streams_replays_and_does_not_reconnect_after_done(
    browser: Browser, start_service: Callable[..., Server], simulator: Server
) -> None:
    """An answer streams token by token; the same question in a new conversation replays from
    the cache; a finished stream is not reopened."""
    service = start_service(RESUME_GRACE="5", LOG_LEVEL="info")
    playground = await open_playground(browser, service.url)
    page = playground.page
    question = f"browser {uuid.uuid4().hex}"
    options = {"sim_tokens": 8, "sim_token_delay": 0.2}
    asked = {"messages": [{"role": "user", "content": question}], "options": options}
    expected = await engine_text(simulator, asked)

    await ask(page, question, options)
    live = await finished(page, service)
    assert live["tokens"] == 8
    assert live["cached"] is False
    assert live["doneAt"] - live["firstTokenAt"] > 1000  # token by token, 200 ms apart
    assert live["text"] == expected
    said = await facts(page)
    assert "llama3.2" in said
    assert any(fact.startswith("first token ") for fact in said)
    assert any(fact.endswith(" tokens/s") for fact in said)
    assert "999999 requests left" in said  # RateLimit of the POST: RATE_LIMIT_MAX 1000000
    await asyncio.sleep(3)  # longer than the stream's retry: an EventSource would be back
    assert len(playground.events) == 1

    await page.click("#new")
    await ask(page, question)
    replay = await finished(page, service)
    assert replay["cached"] is True
    assert replay["text"] == expected
    assert "cache hit" in await facts(page)
    assert await page.text_content("#status") == "Done (from the cache)."
    assert playground.errors == []


async def test_a_conversation_carries_its_history_and_is_kept(
    browser: Browser, start_service: Callable[..., Server], simulator: Server
) -> None:
    """The second question goes with the first and its answer, under the system prompt; the
    engine answers that whole conversation; it is still there after a reload."""
    service = start_service(RESUME_GRACE="5")
    playground = await open_playground(browser, service.url)
    page = playground.page
    await opened(page, "settings")
    await page.fill("#system", "Answer in one line.")
    first = f"[sim: say the cat is called Byte] {uuid.uuid4().hex}"
    await ask(page, first)
    assert (await finished(page, service))["text"] == " the cat is called Byte"
    second = "And what is the cat called?"
    await ask(page, second)
    answer = (await finished(page, service))["text"]

    turns = [{"role": "user", "content": first},
             {"role": "assistant", "content": " the cat is called Byte"},
             {"role": "user", "content": second}]  # fmt: skip
    assert playground.posted[1] == {"messages": turns, "system": "Answer in one line."}
    assert answer == await engine_text(simulator, playground.posted[1])

    await page.reload()
    await until(page, "document.querySelectorAll('#conversations .open').length === 1")
    assert await page.text_content("#conversations .open") == first[:60]  # its title
    await page.click("#conversations .open")
    shown = await page.evaluate(
        "[...document.querySelectorAll('.message')].map(m => m.querySelector('.text, .body')"
        ".textContent)"
    )
    assert shown[:3] == [first, " the cat is called Byte", second]
    assert len(shown) == 4
    assert await page.input_value("#system") == "Answer in one line."


async def test_the_picker_lists_the_models_and_remembers_the_choice(
    browser: Browser, start_service: Callable[..., Server]
) -> None:
    """The picker holds each model of /v1/models once; the choice outlives a reload; thinking
    is offered where the model can, and its thoughts come folded above the answer."""
    service = start_service(RESUME_GRACE="5")
    playground = await open_playground(browser, service.url)
    page = playground.page
    listed = await page.evaluate("[...document.getElementById('model').options].map(o => o.value)")
    assert listed == ["", "llama3.2:latest", "qwen3:latest"]  # "": the service's default

    await page.select_option("#model", "llama3.2:latest")
    await until(page, "document.getElementById('think').disabled")  # llama3.2 cannot think
    await page.select_option("#model", "qwen3:latest")
    await page.reload()
    await until(page, "document.getElementById('model').value === 'qwen3:latest'")
    await until(page, "!document.getElementById('think').disabled")
    await opened(page, "settings")
    await page.check("#think")
    await ask(page, f"think {uuid.uuid4().hex}", {"sim_tokens": 3})
    await finished(page, service)
    assert playground.posted[-1]["model"] == "qwen3:latest"
    assert playground.posted[-1]["think"] is True
    thinking = page.locator(".assistant:last-child details.thinking")
    assert await thinking.is_visible()
    assert await thinking.get_attribute("open") is None  # folded
    assert await page.text_content(".assistant:last-child .thought") == " Let me think."


async def test_a_cut_connection_resumes_with_the_exact_text(
    browser: Browser, start_service: Callable[..., Server], simulator: Server
) -> None:
    """A stream cut mid-answer reconnects with Last-Event-ID: nothing lost, nothing repeated,
    and the answer says it resumed."""
    service = start_service(RESUME_GRACE="5", LOG_LEVEL="info")
    proxy = await CuttableProxy(service.port).start()
    try:
        playground = await open_playground(browser, f"http://127.0.0.1:{proxy.port}")
        page = playground.page
        question = f"cut {uuid.uuid4().hex}"
        options = {"sim_tokens": 20, "sim_token_delay": 0.2}
        asked = {"messages": [{"role": "user", "content": question}], "options": options}
        expected = await engine_text(simulator, asked)
        await ask(page, question, options)
        await until(page, "window.bib.tokens >= 3", timeout_seconds=10)
        proxy.cut()
        state = await finished(page, service)
        assert state["text"] == expected
        assert state["tokens"] == 20  # nothing repeated, nothing lost
        assert state["starts"] == 1  # resumed, not restarted
        assert len(playground.events) == 2  # the reconnect, with Last-Event-ID
        assert "resumed after a cut" in await facts(page)
    finally:
        await proxy.aclose()


async def test_the_page_says_its_place_in_the_queue(
    browser: Browser, start_service: Callable[..., Server]
) -> None:
    """While the only GPU slot is busy, the answer counts its place in line down, then says how
    long it waited."""
    gpu = servers.simulator("--tokens", "30", "--token-delay", "0.1").start()
    try:
        service = start_service(OLLAMA_HOST=gpu.url, OLLAMA_SLOTS="1", RESUME_GRACE="5")
        playground = await open_playground(browser, service.url)
        page = playground.page
        busy = [asyncio.create_task(fetch_from(service, "POST", "/v1/chats/generate",
                                               json={"prompt": f"busy {uuid.uuid4()}"}))
                for _ in range(2)]  # fmt: skip
        async with httpx.AsyncClient(base_url=service.url) as http:  # one runs, one waits
            for _ in range(100):
                (host,) = (await http.get("/v1/health")).json()["ollama_hosts"]
                if host["queued"] == 1:
                    break
                await asyncio.sleep(0.05)
        await ask(page, f"waiting {uuid.uuid4()}", {"sim_tokens": 3})
        await until(page, "document.getElementById('status').textContent"
                          " === 'Waiting for the GPU: 1 ahead of you…'")  # fmt: skip
        await until(page, shows("1 ahead for the GPU"))
        await until(page, "document.getElementById('status').textContent"
                          " === 'Waiting for the GPU: you are next…'")  # fmt: skip
        await until(page, shows("next for the GPU"))
        state = await finished(page, service)
        assert state["queue"] == [1, 0]
        assert any(fact.startswith("waited ") for fact in await facts(page))
        await asyncio.gather(*busy)
    finally:
        gpu.stop()


async def test_the_rate_limit_is_explained(
    browser: Browser, start_service: Callable[..., Server]
) -> None:
    """A 429 says when to ask again, and the question goes back to the box, not into the
    conversation."""
    # the playground creates a generation, then opens its events: with the tests' RESUME_GRACE
    # of 0 a generation nobody has opened yet may be cancelled in that gap, as documented
    service = start_service(RATE_LIMIT_MAX="1", RESUME_GRACE="5", LOG_LEVEL="info")
    playground = await open_playground(browser, service.url)
    page = playground.page
    await ask(page, "first")
    await finished(page, service)
    assert "0 requests left" in await facts(page)
    await ask(page, "second")
    await until(page, "document.getElementById('problem').textContent !== ''")
    problem = await page.text_content("#problem")
    assert problem is not None
    assert problem.startswith("Rate limited: Rate limit of 1 requests per 60 seconds exceeded")
    assert "You can ask again in" in problem
    assert await page.input_value("#prompt") == "second"
    assert await page.locator(".message").count() == 2


async def test_errors_are_said_in_words(
    browser: Browser, start_service: Callable[..., Server]
) -> None:
    """An answer that fails mid-stream keeps its words and says why; one whose generation
    failed before its stream says the service's reason too."""
    service = start_service(RESUME_GRACE="5")
    playground = await open_playground(browser, service.url)
    page = playground.page
    await ask(page, f"fails {uuid.uuid4()}", {"sim_fault": "error", "sim_fault_after": 2})
    await until(page, "document.getElementById('status').textContent === 'Failed.'")
    assert "Ollama reported an error: simulated failure mid-stream" in await facts(page)
    assert await page.evaluate("window.bib.tokens") == 2
    await ask(page, f"fails at once {uuid.uuid4()}", {"sim_fault": "500"})
    await until(page, "window.bib.tokens === 0 && "
                      "document.getElementById('status').textContent === 'Failed.'")  # fmt: skip
    assert "Ollama answered 500: simulated internal error" in await facts(page)


async def test_stop_and_escape_end_the_generation(
    browser: Browser, start_service: Callable[..., Server]
) -> None:
    """Escape stops the answer for good (DELETE), keeping what came; the next question goes."""
    service = start_service(RESUME_GRACE="5")
    playground = await open_playground(browser, service.url)
    page = playground.page
    await ask(page, f"long {uuid.uuid4()}", {"sim_tokens": 200, "sim_token_delay": 0.05})
    await until(page, "window.bib.tokens >= 3")
    await page.keyboard.press("Escape")
    await until(page, "document.getElementById('status').textContent === 'Stopped.'")
    stopped = await page.evaluate("window.bib.tokens")
    assert 3 <= stopped < 200
    assert "stopped" in await facts(page)
    await asyncio.sleep(0.5)
    assert await page.evaluate("window.bib.tokens") == stopped
    await ask(page, f"next {uuid.uuid4()}", {})
    assert (await finished(page, service))["tokens"] == 12


async def test_the_key_field_lets_the_page_in(
    browser: Browser, start_service: Callable[..., Server], redis_url: str
) -> None:
    """Without a key the page says to enter one; with it the models list and answers come."""
    service = start_service(AUTH="required", RESUME_GRACE="5")  # see the rate-limit test
    key = made(redis_url, "page")
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{service.url}/playground")
    await until(page, "document.getElementById('problem').textContent !== ''")
    assert "Enter a valid API key" in (await page.text_content("#problem") or "")
    await ask(page, f"keyless {uuid.uuid4()}", {})
    await until(page, "document.getElementById('status').textContent === 'Not sent.'")
    assert "Enter a valid API key in Settings" in (await page.text_content("#problem") or "")
    await page.fill("#key", key)
    await page.press("#key", "Tab")  # a change: the models are listed again, with the key
    await until(page, "document.getElementById('model').options.length === 3")
    await ask(page, f"keyed {uuid.uuid4()}", {"sim_tokens": 3})
    state = await finished(page, service)
    assert state["tokens"] == 3


async def test_a_model_the_key_may_not_use_is_explained(
    browser: Browser, start_service: Callable[..., Server]
) -> None:
    """The picker shows only the models allowed; a 403 model_not_allowed says to pick another."""
    service = start_service(ANONYMOUS_MODELS="qwen3", RESUME_GRACE="5")
    playground = await open_playground(browser, service.url)
    page = playground.page
    listed = await page.evaluate("[...document.getElementById('model').options].map(o => o.value)")
    assert listed == ["", "qwen3:latest"]
    await ask(page, f"default {uuid.uuid4()}")  # the service's default model: llama3.2
    await until(page, "document.getElementById('problem').textContent !== ''")
    assert "Pick another model" in (await page.text_content("#problem") or "")
    await page.select_option("#model", "qwen3:latest")
    await page.press("#prompt", "Enter")  # the question came back to the box
    assert (await finished(page, service))["tokens"] == 12


async def test_a_hostile_answer_is_rendered_inert(
    browser: Browser, start_service: Callable[..., Server]
) -> None:
    """Markup, script and javascript: links in an answer show as text; only http(s) links are
    links; nothing runs, under the page's Content-Security-Policy."""
    service = start_service(RESUME_GRACE="5")
    playground = await open_playground(browser, service.url)
    page = playground.page
    response = await page.request.get(f"{service.url}/playground")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "require-trusted-types-for 'script'" in policy
    said = orjson.dumps(HOSTILE).decode()
    await ask(page, f"[sim: say {said}] {uuid.uuid4()}", {"sim_tokens": 500})
    state = await finished(page, service)
    assert state["text"] == HOSTILE
    await page.hover(".assistant .body")
    await page.click(".assistant .body p")

    injected = await page.evaluate(
        "document.querySelectorAll('#messages :is(img, script, iframe, svg, b, [onerror],"
        " [onload], [onmouseover])').length"
    )
    assert injected == 0
    assert await page.evaluate("window.pwned") is None
    links = await page.evaluate(
        "[...document.querySelectorAll('#messages a')].map(a => [a.href, a.rel, a.target])"
    )
    assert links == [["https://example.com/docs", "noopener noreferrer", "_blank"]]
    text = await page.text_content(".assistant .body") or ""
    assert '<img src=x onerror="window.pwned=1">' in text
    assert "[click me](javascript:window.pwned=3)" in text
    assert await page.text_content(".assistant strong") == "safe bold"
    assert await page.text_content(".assistant pre code") == "<script>window.pwned=8</script>"
    assert playground.errors == []


async def test_the_page_fits_a_phone_and_a_wide_screen(
    browser: Browser, start_service: Callable[..., Server]
) -> None:
    """At 390 and 1280 pixels wide, light and dark, nothing overflows sideways; the
    screenshots are kept for review, and a code block's button copies it."""
    service = start_service(RESUME_GRACE="5")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for width, dark in ((390, False), (1280, False), (1280, True)):
        playground = await open_playground(browser, service.url, width=width, dark=dark)
        page = playground.page
        await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        await ask(page, "[sim: say the stream, briefly]")
        await finished(page, service)
        await ask(page, f"[sim: say {orjson.dumps(MARKDOWN).decode()}]", {"sim_tokens": 500})
        await finished(page, service)
        await page.click("#settings > summary")  # folded again, to see the conversation
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
        await page.click(".assistant:last-child button.copy")
        copied = await page.evaluate("navigator.clipboard.readText()")
        assert copied.startswith("const source = new EventSource(events);")
        name = f"playground-{width}{'-dark' if dark else ''}"
        await page.screenshot(path=ARTIFACTS / f"{name}.png")
        if width < 760:  # the conversations are behind a button
            assert not await page.is_visible("#sidebar")
            await page.click("#chats")
            await page.screenshot(path=ARTIFACTS / f"{name}-conversations.png")
            await page.click("#hide-chats")
            assert not await page.is_visible("#sidebar")
            await page.click("#chats")
            await page.click("#conversations .open")
            assert not await page.is_visible("#sidebar")
        assert playground.errors == []
        await page.context.close()
