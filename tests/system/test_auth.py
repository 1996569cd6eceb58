"""API keys over real sockets: made with ``python -m app keys``, checked by every surface,
revoked on every replica within a second."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import ollama
import openai
import pytest

from harness import servers
from harness.servers import Server
from tests.support import sse
from tests.support.bodies import unique
from tests.support.keys import keys_command as keys
from tests.support.keys import made_key as made

pytestmark = pytest.mark.system


def test_the_keys_command(redis_url: str) -> None:
    key = made(redis_url, "alice", "--rate-limit", "5", "--token-limit", "900",
               "--concurrency", "2")  # fmt: skip
    assert keys(redis_url, "create", "alice").returncode == 1  # one key per name
    assert keys(redis_url, "create", "zed", "--concurrency", "-1").returncode == 2
    listed = keys(redis_url, "list").stdout
    assert "alice" in listed
    assert "concurrency_limit=2 rate_limit_max=5 token_limit_max=900" in listed
    assert key not in listed  # shown once, when made, never again
    with servers.redis_client(redis_url) as client:
        stored = [client.dump(k) for k in client.keys("bib:{keys}:*")]
    assert stored
    assert not any(key.encode() in bytes(value) for value in stored if value)  # its hash only
    assert keys(redis_url, "revoke", "alice").returncode == 0
    assert keys(redis_url, "revoke", "alice").returncode == 1
    assert "alice" not in keys(redis_url, "list").stdout


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/v1/chats/generate", {"prompt": "x"}, lambda b: b["error"] == "unauthorized"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]},
         lambda b: b["error"]["code"] == "unauthorized"),
        ("/api/chat", {"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]},
         lambda b: "API key" in b["error"]),
    ],
)  # fmt: skip
def test_required_keys_on_every_surface(
    start_service: Callable[..., Server], redis_url: str, path: str, body: dict[str, object],
    error: Callable[[dict[str, object]], bool],
) -> None:  # fmt: skip
    server = start_service(AUTH="required")
    key = made(redis_url, "bob")
    refused = httpx.post(server.url + path, json=body, timeout=20)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert error(refused.json())
    wrong = httpx.post(server.url + path, json=body, headers={"X-API-Key": "bib_nope"})
    assert wrong.status_code == 401
    for header in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        assert httpx.post(server.url + path, json=body, headers=header,
                          timeout=20).status_code == 200  # fmt: skip
    assert httpx.get(server.url + "/api/tags").status_code == 401  # metadata reads too
    assert httpx.get(server.url + "/livez").status_code == 200  # probes never


def test_a_key_has_its_own_limit_and_its_name_not_itself_in_the_log(
    start_service: Callable[..., Server], redis_url: str
) -> None:
    server = start_service(AUTH="optional", RATE_LIMIT_MAX="1000", LOG_LEVEL="info",
                           LOG_FORMAT="json")  # fmt: skip
    key = made(redis_url, "carol", "--rate-limit", "2")
    asked = {"prompt": unique("limited"), "stream": False}
    statuses = [httpx.post(server.url + "/v1/chats/generate", json=asked, timeout=20,
                           headers={"Authorization": f"Bearer {key}"}).status_code
                for _ in range(3)]  # fmt: skip
    assert statuses == [200, 200, 429]
    anonymous = httpx.post(server.url + "/v1/chats/generate", json=asked, timeout=20)
    assert anonymous.status_code == 200  # no key: the per-address default
    assert "q=1000" in anonymous.headers["ratelimit-policy"]
    metrics = httpx.get(server.url + "/metrics").text
    assert servers.sample(metrics, "bib_key_requests_total", key="carol") == 3
    server.stop()
    log = server.log.read_text()
    assert '"key":"carol"' in log
    assert key not in log


def test_off_ignores_keys(service: Server) -> None:
    answer = httpx.post(service.url + "/v1/chats/generate", timeout=20,
                        json={"prompt": "off", "stream": False},
                        headers={"Authorization": "Bearer bib_anything"})  # fmt: skip
    assert answer.status_code == 200


def test_a_revoked_key_stops_on_another_replica_within_a_second(
    start_service: Callable[..., Server], redis_url: str
) -> None:
    one, other = start_service(AUTH="required"), start_service(AUTH="required")
    key = made(redis_url, "dave")
    headers = {"X-API-Key": key}
    for server in (one, other):  # each replica has seen it
        assert httpx.get(server.url + "/v1/models", headers=headers).status_code == 200
    assert keys(redis_url, "revoke", "dave").returncode == 0
    revoked = time.monotonic()
    while httpx.get(other.url + "/v1/models", headers=headers).status_code == 200:
        assert time.monotonic() - revoked < 1.0, "the revoked key still works after a second"
        time.sleep(0.05)
    assert httpx.get(one.url + "/v1/models", headers=headers).status_code == 401


def test_a_browser_follows_what_a_keyed_fetch_started(
    start_service: Callable[..., Server], redis_url: str
) -> None:
    server = start_service(AUTH="required", RESUME_GRACE="5")  # until the page follows
    key = made(redis_url, "erin")
    started = httpx.post(server.url + "/v1/chats/generations", json={"prompt": "page"},
                         headers={"Authorization": f"Bearer {key}"}, timeout=20)  # fmt: skip
    assert started.status_code == 202
    events = httpx.get(server.url + started.json()["events"], timeout=20)  # no key: EventSource
    assert events.status_code == 200
    assert sse.events(events.content)[-1].type == "done"
    get = httpx.get(server.url + "/v1/chats/generate", params={"prompt": "page"})
    assert get.status_code == 401  # an EventSource cannot send the key: POST, then follow


def test_the_clients_with_keys(start_service: Callable[..., Server], redis_url: str) -> None:
    server = start_service(AUTH="required")
    key = made(redis_url, "frank")
    with openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0) as sdk:
        answer = sdk.chat.completions.create(model="llama3.2", messages=[
            {"role": "user", "content": unique("sdk key")}])  # fmt: skip
        assert answer.choices[0].message.content
    wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="bib_wrong", max_retries=0)
    with wrong, pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    client = ollama.Client(host=server.url, headers={"Authorization": f"Bearer {key}"})
    try:
        assert client.generate(model="llama3.2", prompt=unique("ollama key")).done
    finally:
        client._client.close()
    keyless = ollama.Client(host=server.url)
    try:
        with pytest.raises(ollama.ResponseError) as refused:
            keyless.list()
    finally:
        keyless._client.close()
    assert refused.value.status_code == 401


def test_redis_down_refuses_keys_it_cannot_check_only_when_required(
    start_service: Callable[..., Server],
) -> None:
    down = f"redis://127.0.0.1:{servers.free_port()}/0"
    asked = {"prompt": unique("no redis"), "stream": False}
    headers = {"X-API-Key": "bib_unchecked"}
    required = start_service(AUTH="required", REDIS_URL=down)
    refused = httpx.post(required.url + "/v1/chats/generate", json=asked, headers=headers,
                         timeout=20)  # fmt: skip
    assert refused.status_code == 503
    assert refused.json()["error"] == "auth_unavailable"
    optional = start_service(AUTH="optional", REDIS_URL=down)
    answered = httpx.post(optional.url + "/v1/chats/generate", json=asked, headers=headers,
                          timeout=20)  # fmt: skip
    assert answered.status_code == 200  # as if it had no key: the per-address defaults


def _statuses(server: Server, users: list[str], **headers: str) -> list[int]:
    asked = {"prompt": unique("per user"), "stream": False}
    return [httpx.post(server.url + "/v1/chats/generate", json=asked, timeout=20,
                       headers={"X-User": user, **headers}).status_code
            for user in users]  # fmt: skip


def test_a_trusted_proxys_identity_header_is_the_client(
    start_service: Callable[..., Server],
) -> None:
    trusted = start_service(IDENTITY_HEADER="X-User", RATE_LIMIT_MAX="1", LOG_LEVEL="info")
    assert _statuses(trusted, ["ann", "ben", "ann", "ben"]) == [200, 200, 429, 429]
    log = trusted.log.read_text()
    assert '"user":"ann"' in log


def test_the_identity_header_from_anyone_else_is_ignored(
    start_service: Callable[..., Server],
) -> None:
    direct = start_service(IDENTITY_HEADER="X-User", RATE_LIMIT_MAX="1",
                           FORWARDED_ALLOW_IPS="192.0.2.1")  # fmt: skip
    assert _statuses(direct, ["ann", "ben"]) == [200, 429]  # one address: one bucket


def test_a_key_goes_before_the_identity_header(
    start_service: Callable[..., Server], redis_url: str
) -> None:
    server = start_service(AUTH="optional", IDENTITY_HEADER="X-User", RATE_LIMIT_MAX="1")
    key = made(redis_url, "gina", "--rate-limit", "3")
    bearer = {"Authorization": f"Bearer {key}"}
    assert _statuses(server, ["ann", "ben", "cid", "dee"], **bearer) == [200, 200, 200, 429]
