"""The real ``anthropic`` SDK (from PyPI) against the real app over sockets: Anthropic's Messages
API (``/v1/messages``) as its users, and Claude Code, speak it, ``base_url`` pointed at the
service.

The SDK (2.x) speaks HTTP through ``httpx2``, as the ``openai`` SDK does. The Messages API has
no ``options`` to direct the simulator, so a test that needs a slow or failing Ollama starts a
simulator of its own and an app in front of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import MessageParam, ToolParam

from harness import servers
from harness.servers import Server
from tests.support.bodies import simulator_chat_text, unique
from tests.support.keys import made_key
from tests.support.sdks import Recording

pytestmark = pytest.mark.system

SDK = Callable[..., anthropic.Anthropic]
WEATHER: list[ToolParam] = [{
    "name": "f", "description": "looks something up",
    "input_schema": {"type": "object", "properties": {"q": {"type": "integer"}}}}]  # fmt: skip


@pytest.fixture
def sdk() -> Iterator[SDK]:
    """Makes SDK clients of a server, closed after the test: with ``api_key`` (``x-api-key``)
    or ``auth_token`` (``Authorization: Bearer``), a read timeout, and a transport."""
    made: list[anthropic.Anthropic] = []

    def make(server: Server, *, api_key: str | None = None, auth_token: str | None = None,
             read_timeout: float = 20, transport: httpx2.BaseTransport | None = None,
             ) -> anthropic.Anthropic:  # fmt: skip
        timeout = httpx2.Timeout(20, read=read_timeout)
        http = httpx2.Client(transport=transport or httpx2.HTTPTransport(), timeout=timeout)
        if auth_token is None:
            api_key = api_key or "anything"
        made.append(anthropic.Anthropic(base_url=server.url, api_key=api_key,
                                        auth_token=auth_token, http_client=http,
                                        timeout=timeout, max_retries=0))  # fmt: skip
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def own_simulator() -> Iterator[Callable[..., Server]]:
    """Starts a simulator with the given options (the Messages API cannot set them per
    request); stopped after the test."""
    started: list[Server] = []

    def start(*args: str) -> Server:
        started.append(servers.simulator("--tokens", "12", "--token-delay", "0.01",
                                         *args).start())  # fmt: skip
        return started[-1]

    yield start
    for server in started:
        server.stop()


def ask(label: str) -> list[MessageParam]:
    return [{"role": "user", "content": unique(label)}]


def blocks(message: anthropic.types.Message) -> list[dict[str, Any]]:
    """A message's content as plain data, whether the stream helper parsed it or not."""
    return [{k: v for k, v in block.model_dump().items() if k != "parsed_output"}
            for block in message.content]  # fmt: skip


def test_a_message_streamed_then_whole_is_what_the_engine_says(
    service: Server, simulator: Server, sdk: SDK
) -> None:
    client = sdk(service)
    messages = ask("anthropic")
    with client.messages.stream(model="llama3.2", max_tokens=64, messages=messages,
                                system="be brief") as stream:  # fmt: skip
        streamed_text = "".join(stream.text_stream)
        streamed = stream.get_final_message()
    native = {"model": "llama3.2", "options": {"num_predict": 64},
              "messages": [{"role": "system", "content": "be brief"}, *messages]}  # fmt: skip
    assert streamed_text == simulator_chat_text(simulator, native)
    assert [block.type for block in streamed.content] == ["text"]
    assert streamed.content[0].type == "text"
    assert streamed.content[0].text == streamed_text
    assert streamed.stop_reason == "end_turn"
    assert streamed.usage.output_tokens == 12
    assert streamed.usage.input_tokens > 0
    assert streamed.model == "llama3.2"
    assert streamed.id.startswith("msg_")
    raw = client.messages.with_raw_response.create(model="llama3.2", max_tokens=64,
                                                   messages=messages, system="be brief",
                                                   extra_query={"beta": "true"})  # fmt: skip
    assert raw.headers["x-cache"] == "HIT"  # the stream's generation, from the cache
    whole = raw.parse()
    assert whole.id == streamed.id
    assert blocks(whole) == blocks(streamed)
    assert whole.stop_reason == "end_turn"
    assert whole.usage == streamed.usage


@pytest.mark.parametrize(
    ("model", "thinking", "kinds"),
    [
        pytest.param("qwen3", {"type": "enabled", "budget_tokens": 1024},
                     ["thinking", "text"], id="thinks"),
        pytest.param("qwen3", {"type": "adaptive", "display": "omitted"}, ["text"],
                     id="thinks-not-shown"),
        pytest.param("llama3.2", {"type": "adaptive"}, ["text"], id="cannot-think"),
    ],
)  # fmt: skip
def test_thinking_where_the_model_can_and_none_where_it_cannot(
    service: Server, sdk: SDK, model: str, thinking: anthropic.types.ThinkingConfigParam,
    kinds: list[str],
) -> None:  # fmt: skip
    """Claude Code asks every model to think; a model that cannot (Ollama answers 400 "does
    not support thinking") is served without thinking instead of refused."""
    client = sdk(service)
    messages = ask("think")
    messages[0]["content"] = f"{messages[0]['content']} [sim: say thought through]"
    with client.messages.stream(model=model, max_tokens=2048, messages=messages,
                                thinking=thinking) as stream:  # fmt: skip
        streamed = stream.get_final_message()
    assert [block.type for block in streamed.content] == kinds
    assert streamed.content[-1].type == "text"
    assert streamed.content[-1].text == " thought through"
    if "thinking" in kinds:
        assert streamed.content[0].type == "thinking"
        assert streamed.content[0].thinking == " Let me think."
    whole = client.messages.create(model=model, max_tokens=2048, messages=messages,
                                   thinking=thinking)  # fmt: skip
    assert blocks(whole) == blocks(streamed)


def test_a_tool_call_round_trips(service: Server, sdk: SDK) -> None:
    client = sdk(service)
    messages = ask("tools")
    messages[0]["content"] = f'{messages[0]["content"]} [sim: call f {{"q": 1}}]'
    with client.messages.stream(model="llama3.2", max_tokens=64, messages=messages,
                                tools=WEATHER) as stream:  # fmt: skip
        streamed = stream.get_final_message()
    (call,) = streamed.content
    assert call.type == "tool_use"
    assert (call.name, call.input) == ("f", {"q": 1})
    assert call.id.startswith("toolu_")
    assert streamed.stop_reason == "tool_use"
    whole = client.messages.create(model="llama3.2", max_tokens=64, messages=messages,
                                   tools=WEATHER)  # fmt: skip
    assert blocks(whole) == blocks(streamed)
    assert whole.stop_reason == "tool_use"
    answered = client.messages.create(model="llama3.2", max_tokens=64, tools=WEATHER, messages=[
        *messages,
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": "sunny and warm"}]},
    ])  # fmt: skip
    assert [block.type for block in answered.content] == ["text"]
    assert answered.content[0].type == "text"
    assert answered.content[0].text == " The tool said: sunny and warm"
    assert answered.stop_reason == "end_turn"


def test_count_tokens_is_a_positive_estimate(service: Server, sdk: SDK) -> None:
    client = sdk(service)
    short = client.messages.count_tokens(model="llama3.2", messages=ask("count"))
    longer = client.messages.count_tokens(model="llama3.2", messages=ask("count " * 50),
                                          system="be brief", tools=WEATHER)  # fmt: skip
    assert isinstance(short.input_tokens, int)
    assert 0 < short.input_tokens < longer.input_tokens


def test_pings_keep_a_slow_first_token_within_the_read_timeout(
    start_service: Callable[..., Server], own_simulator: Callable[..., Server], sdk: SDK
) -> None:
    """A model load of 3 s, a client that gives up after 2 s of silence: ``event: ping``
    every second keeps the stream alive; without it the same client times out."""
    slow = own_simulator("--first-token-delay", "3", "--tokens", "3")
    recording = Recording()
    pinged = sdk(start_service(OLLAMA_HOST=slow.url, HEARTBEAT_INTERVAL="1"), read_timeout=2,
                 transport=recording)  # fmt: skip
    with pinged.messages.stream(model="llama3.2", max_tokens=64,
                                messages=ask("slow")) as stream:  # fmt: skip
        events = list(stream)
        message = stream.get_final_message()
    assert message.usage.output_tokens == 3
    assert events[-1].type == "message_stop"
    seen = bytes(recording.seen)
    assert seen.startswith(b'event: ping\ndata: {"type":"ping"}\n\n')
    assert seen.count(b"event: ping\n") >= 2
    silent = sdk(start_service(OLLAMA_HOST=slow.url, HEARTBEAT_INTERVAL="10"), read_timeout=2)
    with pytest.raises(anthropic.APITimeoutError):
        silent.messages.create(model="llama3.2", max_tokens=64, messages=ask("silent"),
                               stream=True)  # fmt: skip


def test_errors_are_the_sdks_exceptions(service: Server, sdk: SDK) -> None:
    client = sdk(service)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nonexistent", max_tokens=64, messages=ask("404"))
    assert missing.value.body == {"type": "error", "error": {
        "type": "not_found_error", "message": missing.value.body["error"]["message"]}}  # type: ignore[index]  # fmt: skip
    with pytest.raises(anthropic.BadRequestError) as zero:
        client.messages.create(model="llama3.2", max_tokens=0, messages=ask("zero"))
    assert zero.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "max_tokens" in zero.value.body["error"]["message"]  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as forced:
        client.messages.create(model="llama3.2", max_tokens=64, messages=ask("any"),
                               tools=WEATHER, tool_choice={"type": "any"})  # fmt: skip
    assert "tool_choice" in forced.value.body["error"]["message"]  # type: ignore[index]


def test_rate_limited_is_a_rate_limit_error(start_service: Callable[..., Server], sdk: SDK) -> None:
    client = sdk(start_service(RATE_LIMIT_MAX="1"))
    for _ in range(2):  # counting tokens generates nothing, and is counted against no quota
        assert client.messages.count_tokens(model="llama3.2", messages=ask("free")).input_tokens
    client.messages.create(model="llama3.2", max_tokens=64, messages=ask("first"))
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.create(model="llama3.2", max_tokens=64, messages=ask("second"))
    assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(refused.value.response.headers["retry-after"]) > 0


def test_an_error_mid_stream_is_raised_while_iterating(
    start_service: Callable[..., Server], own_simulator: Callable[..., Server], sdk: SDK
) -> None:
    failing = own_simulator("--fault", "error", "--fault-after", "2")
    client = sdk(start_service(OLLAMA_HOST=failing.url))
    stream = client.messages.create(model="llama3.2", max_tokens=64, messages=ask("fails"),
                                    stream=True)  # fmt: skip
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as failed:
        received.extend(event.type for event in stream)  # what came before the error stays
    assert received == ["message_start", "content_block_start", "content_block_delta",
                        "content_block_delta"]  # fmt: skip
    assert failed.value.status_code == 200  # the stream's status: the error came in it
    message = "Ollama reported an error: simulated failure mid-stream"
    assert failed.value.body == {"type": "error",
                                 "error": {"type": "api_error", "message": message}}  # fmt: skip


def test_keys_as_x_api_key_or_bearer(
    start_service: Callable[..., Server], redis_url: str, sdk: SDK
) -> None:
    server = start_service(AUTH="required")
    key = made_key(redis_url, "claude")
    with pytest.raises(anthropic.AuthenticationError) as refused:
        sdk(server, api_key="bib_nope").messages.create(model="llama3.2", max_tokens=64,
                                                        messages=ask("nope"))  # fmt: skip
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    for client in (sdk(server, api_key=key), sdk(server, auth_token=key)):
        answer = client.messages.create(model="llama3.2", max_tokens=64, messages=ask("key"))
        assert answer.content[0].type == "text"
        assert client.messages.count_tokens(model="llama3.2", messages=ask("k")).input_tokens
