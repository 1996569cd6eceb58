"""The real coding agents from npm, Claude Code and Codex (the versions ``./scripts/test`` pins
and installs), run headless against the real app and the simulator, as people point them at
the service: Claude Code with ``ANTHROPIC_BASE_URL`` (the Messages API), Codex with a model
provider whose ``base_url`` is the service's ``/v1`` (the Responses API).

Each run is offline: Claude Code with its nonessential traffic off, Codex with no provider but
ours; neither retries (a failure shows at once). The simulator's directives steer the model:
``[sim: say WORDS]`` answers those words, ``[sim: call NAME {JSON}]`` calls the agent's own
tool, whose result the simulator answers with "The tool said:" and its first words. The
simulator's counters show how many requests each run made.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import servers
from harness.servers import Server, simulator_counters
from tests.support.agents import installed, run

pytestmark = pytest.mark.system
# the models Claude Code 2.1 asks for by default (main, and small and fast) as the README's
# example maps them
CLAUDE_CODE_ALIASES = ("claude-opus-5-5=llama3.2,claude-sonnet-5-5=llama3.2,"
                       "claude-haiku-4-5-20251001=llama3.2")  # fmt: skip
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hi from apply_patch\n*** End Patch\n"


@pytest.fixture(scope="module")
def claude() -> Path:
    return installed("claude", "@anthropic-ai/claude-code")


@pytest.fixture(scope="module")
def codex() -> Path:
    return installed("codex", "@openai/codex")


def claude_code(claude: Path, service: Server, tmp_path: Path, prompt: str, *args: str,
                model: str | None = "llama3.2") -> dict[str, Any]:  # fmt: skip
    """``claude -p PROMPT --output-format json`` in a new home and working directory, against
    ``service``, with llama3.2: a model that cannot think, where Claude Code asks for thinking
    on every request (``model`` None: its own default model). Its JSON result."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {"HOME": str(home), "ANTHROPIC_BASE_URL": service.url,
           "ANTHROPIC_AUTH_TOKEN": "anything",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "CLAUDE_CODE_MAX_RETRIES": "0"}  # fmt: skip
    if model is not None:
        env["ANTHROPIC_MODEL"] = model
    argv = [str(claude), "-p", prompt, "--output-format", "json", *args]
    finished = run(argv, env=env, cwd=work)
    assert finished.returncode == 0, (finished.stdout, finished.stderr)
    result: dict[str, Any] = json.loads(finished.stdout)
    return result


def test_claude_code_answers_through_the_messages_api(
    claude: Path, service: Server, simulator: Server, tmp_path: Path
) -> None:
    before = simulator_counters(simulator)["started"]
    result = claude_code(claude, service, tmp_path, "[sim: say hello from the bottle]")
    assert result["result"].strip() == "hello from the bottle"
    assert (result["is_error"], result["num_turns"]) == (False, 1)
    assert result["stop_reason"] == "end_turn"
    # one streamed request, served: no retry, no non-streaming fallback
    assert simulator_counters(simulator)["started"] == before + 1


def test_claude_code_with_its_own_model_names_is_served_by_their_aliases(
    claude: Path, start_service: Callable[..., Server], tmp_path: Path
) -> None:
    """No ``ANTHROPIC_MODEL``: Claude Code asks for its own models, which the service's aliases
    (README, "Model aliases") map onto a local one; the answer names what it asked for."""
    service = start_service(MODEL_ALIASES=CLAUDE_CODE_ALIASES)
    result = claude_code(claude, service, tmp_path, "[sim: say hello by alias]", model=None)
    assert result["result"].strip() == "hello by alias"
    assert list(result["modelUsage"]) == ["claude-opus-5-5"]  # its main model, by its name


def test_claude_code_runs_its_bash_tool_and_the_model_reads_the_result(
    claude: Path, service: Server, simulator: Server, tmp_path: Path
) -> None:
    before = simulator_counters(simulator)["started"]
    call = '[sim: call Bash {"command": "echo hello-from-tool", "description": "greet"}]'
    result = claude_code(claude, service, tmp_path, call, "--allowedTools", "Bash")
    assert result["result"].strip() == "The tool said: hello-from-tool"
    assert (result["is_error"], result["num_turns"]) == (False, 2)
    assert result["permission_denials"] == []
    assert simulator_counters(simulator)["started"] == before + 2  # the call, then the answer


@pytest.fixture(scope="module")
def codex_service(service_env: dict[str, str]) -> Iterator[tuple[Server, Server]]:
    """An app whose Ollama has ``gpt-5.5``: Codex offers its ``apply_patch`` custom tool only
    to models it knows, and asks for the model of its configuration. The simulator, then the
    app."""
    simulator = servers.simulator("--tokens", "12", "--token-delay", "0.01",
                                  "--models", "gpt-5.5,llama3.2").start()  # fmt: skip
    app = servers.app({**service_env, "OLLAMA_HOST": simulator.url}).start("/livez")
    yield simulator, app
    app.stop()
    simulator.stop()


def codex_exec(codex: Path, service: Server, tmp_path: Path, prompt: str, *args: str
               ) -> tuple[str, str]:  # fmt: skip
    """``codex exec PROMPT`` in a new home and working directory (``tmp_path / "work"``), its
    configuration pointing at ``service`` as the provider ``bib``: its stdout and stderr."""
    home, codex_home, work = tmp_path / "home", tmp_path / "codex", tmp_path / "work"
    for folder in (home, codex_home, work):
        folder.mkdir()
    (codex_home / "config.toml").write_text(f"""\
model = "gpt-5.5"
model_provider = "bib"

[model_providers.bib]
name = "Byte in Bottle"
base_url = "{service.url}/v1"
env_key = "BIB_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
""")
    env = {"HOME": str(home), "CODEX_HOME": str(codex_home), "BIB_API_KEY": "anything"}
    argv = [str(codex), "exec", "--skip-git-repo-check", *args, prompt]
    finished = run(argv, env=env, cwd=work)
    assert finished.returncode == 0, (finished.stdout, finished.stderr)
    return finished.stdout, finished.stderr


def test_codex_answers_through_the_responses_api(
    codex: Path, codex_service: tuple[Server, Server], tmp_path: Path
) -> None:
    simulator, service = codex_service
    before = simulator_counters(simulator)["started"]
    stdout, _ = codex_exec(codex, service, tmp_path, "[sim: say hello from codex]")
    assert stdout.strip() == "hello from codex"
    assert simulator_counters(simulator)["started"] == before + 1


def test_codex_runs_its_exec_command_function_tool(
    codex: Path, codex_service: tuple[Server, Server], tmp_path: Path
) -> None:
    """Codex's own result of a command begins with a header of its own ("Chunk ID: …, Wall
    time: …"), so the answer's first words are that header: the command's output is read in
    Codex's events (``--json``)."""
    simulator, service = codex_service
    before = simulator_counters(simulator)["started"]
    call = '[sim: call exec_command {"cmd": "echo hello-from-codex"}]'
    stdout, _ = codex_exec(codex, service, tmp_path, call, "--json")
    events = [json.loads(line) for line in stdout.splitlines()]
    items = [e["item"] for e in events if e["type"] == "item.completed"]
    assert [item["type"] for item in items] == ["command_execution", "agent_message"]
    command, answer = items
    assert "echo hello-from-codex" in command["command"]
    assert (command["aggregated_output"], command["exit_code"]) == ("hello-from-codex\n", 0)
    assert answer["text"].startswith(" The tool said: Chunk ID:")  # its result went back
    assert events[-1]["type"] == "turn.completed"
    assert simulator_counters(simulator)["started"] == before + 2


def test_codex_applies_a_patch_with_its_apply_patch_custom_tool(
    codex: Path, codex_service: tuple[Server, Server], tmp_path: Path
) -> None:
    simulator, service = codex_service
    before = simulator_counters(simulator)["started"]
    call = f"[sim: call apply_patch {json.dumps({'input': PATCH})}]"
    stdout, _ = codex_exec(codex, service, tmp_path, call, "-s", "workspace-write")
    assert (tmp_path / "work" / "hello.txt").read_text() == "hi from apply_patch\n"
    assert stdout.strip().startswith("The tool said: Exit code: 0")  # its result went back
    assert simulator_counters(simulator)["started"] == before + 2
