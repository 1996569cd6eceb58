"""Where a request's generation waits and what its prompt keeps (``app.access.placement``)."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from app.access.api_keys import ApiKey
from app.access.identity import Identity
from app.access.placement import placed
from app.errors import Unsupported
from app.generations.cache import content_hash
from app.generations.request import CompletionRequest
from app.settings import Settings

ASKED = CompletionRequest(model="llama3.2", prompt="Hi")
ANONYMOUS = Identity("127.0.0.1")
BATCH_KEY = Identity("key:nightly", ApiKey("nightly", 0.0, priority="batch"))


@pytest.mark.parametrize(
    ("asking", "header", "body", "anonymous", "band"),
    [
        (ANONYMOUS, None, "interactive", "interactive", "interactive"),
        (ANONYMOUS, "batch", "interactive", "interactive", "batch"),  # lowered by a header
        (ANONYMOUS, None, "batch", "interactive", "batch"),  # by the body (service_tier flex)
        (ANONYMOUS, "interactive", "interactive", "batch", "batch"),  # never raised
        (BATCH_KEY, "interactive", "interactive", "interactive", "batch"),  # nor above its key
    ],
)  # fmt: skip
def test_a_client_may_lower_its_band_never_raise_it(
    asking: Identity, header: str | None, body: str, anonymous: str, band: str
) -> None:
    headers = Headers({"x-priority": header} if header else {})
    settings = Settings(anonymous_priority=anonymous)
    asked = CompletionRequest(model="llama3.2", prompt="Hi", band=body)
    assert placed(asked, headers, asking, settings).band == band


def test_an_unknown_band_is_refused() -> None:
    with pytest.raises(Unsupported, match="X-Priority must be interactive or batch"):
        placed(ASKED, Headers({"x-priority": "urgent"}), ANONYMOUS, Settings())


@pytest.mark.parametrize("header", ["x-session-id", "x-claude-code-session-id", "session_id"])
def test_a_session_comes_from_the_body_else_a_header(header: str) -> None:
    headers = Headers({header: "conversation-7"})
    assert placed(ASKED, headers, ANONYMOUS, Settings()).session == "conversation-7"
    keyed = CompletionRequest(model="llama3.2", prompt="Hi", session="cache-key")
    assert placed(keyed, headers, ANONYMOUS, Settings()).session == "cache-key"


def test_volatile_lines_are_stripped_only_when_asked() -> None:
    def claude_code(hash_: str) -> CompletionRequest:
        billing = f"x-anthropic-billing-header: cc_version=2.1.332; cc_entrypoint=cli; cch={hash_};"
        return CompletionRequest(
            model="llama3.2",
            messages=({"role": "system", "content": f"{billing}\nYou are Claude Code."},
                      {"role": "user", "content": "Hi"}),
            system=f"{billing}\n\nBe brief.",
        )  # fmt: skip

    stable = Settings(strip_volatile_prompt=True)
    first = placed(claude_code("a1b2c"), Headers(), ANONYMOUS, stable)
    second = placed(claude_code("f9e8d"), Headers(), ANONYMOUS, stable)
    assert first.system == "Be brief."
    assert first.messages is not None
    assert first.messages[0]["content"] == "You are Claude Code."
    assert content_hash(first) == content_hash(second)  # one cache entry, one prefix
    kept = placed(claude_code("a1b2c"), Headers(), ANONYMOUS, Settings())
    assert kept.system is not None
    assert kept.system.startswith("x-anthropic-billing-header")
