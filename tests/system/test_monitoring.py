"""The shipped monitoring (``monitoring/``) with real parts: promtool checks the rules and runs
their unit tests, and Debian's Prometheus, scraping a real service every second with the rules
loaded, finds data for every expression of the rules and of the Grafana dashboard.

An alert's expression is empty while all is well, so it is queried without its comparisons
(``a > 0.05`` becomes ``a + 0 * 0.05``: the same vector matching, the value of its left side),
and every series it selects must exist. NaN (a quantile of nothing observed, a ratio of
nothing) counts as no data. A series created by its first event is rated only from its next
one, so the traffic runs twice: once to create every series, once, after Prometheus has
scraped them, to move them.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from harness import servers
from harness.servers import Server
from tests.support.bodies import GENERATE, slow, unique
from tests.support.keys import made_key
from tests.support.settings import ROOT

pytestmark = [pytest.mark.anyio, pytest.mark.system]

MONITORING = ROOT / "monitoring"
RULE_FILES = ("recording-rules.yml", "alert-rules.yml")
DASHBOARD = MONITORING / "grafana-dashboard.json"
JOB = "bib"  # the scrape job the alerts name (monitoring/prometheus.yml)
# Grafana's own variables, as it would fill them at a 1 s scrape interval (``$__rate_interval``
# is at least four scrape intervals; a minute is safe)
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__interval_ms": "15000",
                     "__range": "5m", "__range_s": "300"}  # fmt: skip
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
# a comparison outside label matchers and strings, which are matched first to be kept
COMPARISON = re.compile(r'"[^"]*"|\{[^}]*\}|(==|!=|>=|<=|>|<)')
# a series' name with its matchers; label lists (by, on, ...) and strings are skipped
SELECTOR = re.compile(
    r'"[^"]*"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)'
    r"|\b((?:bib|gen_ai)_\w+|[a-z_]+:\w+:\w+|up)\b(\{[^}]*\})?"
)
Query = Callable[[str], Awaitable[list[float]]]


def rules() -> list[dict[str, Any]]:
    """Every recording and alert rule shipped."""
    found: list[dict[str, Any]] = []
    for name in RULE_FILES:
        for group in yaml.safe_load((MONITORING / name).read_text())["groups"]:
            found += group["rules"]
    return found


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(within: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those a collapsed row holds included."""
    for panel in within:
        yield panel
        yield from panels(panel.get("panels", []))


def targets() -> list[tuple[str, str]]:
    """Each query of the dashboard: its panel's title and its expression, variables filled."""
    return [(f"{panel['title']} {target['refId']}", grafana_filled(target["expr"]))
            for panel in panels(dashboard()["panels"])
            for target in panel.get("targets", [])]  # fmt: skip


def grafana_filled(expr: str) -> str:
    """``expr`` with Grafana's variables and the dashboard's (each at its "All" value); an
    unknown variable fails the test."""
    known = dict(GRAFANA_VARIABLES)
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            known[variable["name"]] = variable["allValue"]

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in known:
            pytest.fail(f"unknown variable ${name} in {expr}")
        return known[name]

    return VARIABLE.sub(value, expr)


def without_comparisons(expr: str) -> str:
    """``expr`` with each comparison made a term that adds 0 (see the module docstring)."""
    return COMPARISON.sub(lambda m: " + 0 * " if m[1] else m[0], expr)


def selectors(expr: str) -> set[str]:
    """The series ``expr`` selects, each with its matchers."""
    return {m[1] + (m[2] or "") for m in SELECTOR.finditer(expr) if m[1]}


def rule_queries() -> list[tuple[str, str]]:
    """What must have data for each rule: a recording rule's expression and the series it
    records, an alert's expression without its comparisons."""
    queries = []
    for rule in rules():
        if "record" in rule:
            queries += [(rule["record"], rule["expr"]), (f"{rule['record']} (recorded)",
                                                         rule["record"])]  # fmt: skip
        else:
            queries.append((rule["alert"], without_comparisons(rule["expr"])))
    return queries


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=MONITORING,
                          timeout=60)  # fmt: skip


def test_promtool_checks_the_rules_and_passes_their_unit_tests() -> None:
    """``promtool check rules`` (lint fatal) and ``promtool test rules``, as ``./scripts/check``
    runs them, and ``promtool check config`` of the example configuration."""
    checked = promtool("check", "rules", "--lint-fatal", *RULE_FILES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "rules-test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """An alert added without its promtool tests fails here: each needs a case where it fires
    and one where it does not."""
    cases = yaml.safe_load((MONITORING / "rules-test.yml").read_text())["tests"]
    expected = [case for test in cases for case in test.get("alert_rule_test", [])]
    for alert in (rule["alert"] for rule in rules() if "alert" in rule):
        fires = [bool(c["exp_alerts"]) for c in expected if c["alertname"] == alert]
        assert True in fires, f"{alert} is never tested firing"
        assert False in fires, f"{alert} is never tested quiet"


def test_the_dashboard_is_grafana_json_on_a_chosen_datasource() -> None:
    """Every panel queries the ``datasource`` variable's Prometheus (file provisioning leaves
    ``${DS_…}`` inputs unresolved), has a unique id and a place on the 24-column grid that no
    other panel takes, and names no variable the dashboard does not define."""
    board = dashboard()
    assert board["uid"] == "byte-in-bottle"
    assert board["title"]
    assert board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["host"]["query"]["query"] == "label_values(bib_ollama_host_up, host)"
    every = list(panels(board["panels"]))
    assert len({p["id"] for p in every}) == len(every)
    taken: set[tuple[int, int]] = set()
    for panel in every:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(grid["x"] + dx, grid["y"] + dy)
                 for dx in range(grid["w"]) for dy in range(grid["h"])}  # fmt: skip
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            grafana_filled(target["expr"])  # fails on an unknown variable
    with pytest.raises(pytest.fail.Exception, match=r"unknown variable \$instance"):
        grafana_filled('up{instance="$instance"}')


def prometheus(target: Server, directory: Path) -> Server:
    """Debian's Prometheus, scraping ``target`` every second as job ``bib``, with the rules."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(MONITORING / name) for name in RULE_FILES],
        "scrape_configs": [{"job_name": JOB, "static_configs": [
            {"targets": [f"127.0.0.1:{target.port}"]}]}],
    }  # fmt: skip
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = servers.free_port()
    argv = ["prometheus", f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]  # fmt: skip
    return Server(argv, port)


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[[Server], Server]]:
    """Starts a Prometheus scraping a server (``prometheus``); stopped after the test."""
    started: list[Server] = []

    def start(target: Server) -> Server:
        directory = tmp_path / f"prometheus{len(started)}"
        directory.mkdir()
        started.append(prometheus(target, directory).start("/-/ready"))
        return started[-1]

    yield start
    for server in started:
        server.stop()


async def drive(service: Server, key: str, round_: int) -> None:
    """Traffic that moves every series: streams waiting for the one GPU slot, a cache hit, an
    engine failure (502), a client over its quota (429) and a request with an API key. Each
    client its own address (``X-Forwarded-For``, from the trusted 127.0.0.1)."""

    def client(n: int) -> dict[str, str]:
        return {"X-Forwarded-For": f"192.0.2.{10 * round_ + n}"}

    bodies = [slow(unique(f"monitoring {round_}"), tokens=5, delay=0.05) for _ in range(3)]
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        # three streams at once on one slot: two of them wait
        answers = await asyncio.gather(*(http.post(GENERATE, json=body, headers=client(n))
                                         for n, body in enumerate(bodies)))  # fmt: skip
        assert [a.status_code for a in answers] == [200] * 3
        hit = await http.post(GENERATE, json={**bodies[0], "stream": False}, headers=client(3))
        assert hit.headers["x-cache"] == "HIT"
        fault = {"prompt": unique("fault"), "options": {"sim_fault": "500"}}
        assert (await http.post(GENERATE, json=fault, headers=client(4))).status_code == 502
        over = [(await http.post(GENERATE, json={**bodies[0], "stream": False},
                                 headers=client(5))).status_code for _ in range(3)]  # fmt: skip
        assert over[-1] == 429  # RATE_LIMIT_MAX is 2
        keyed = {"Authorization": f"Bearer {key}", **client(6)}
        assert (await http.post(GENERATE, json=bodies[1], headers=keyed)).status_code == 200


async def until_all_have_data(query: Query, queries: list[tuple[str, str]], *,
                              nan_is_data: bool, seconds: float) -> None:  # fmt: skip
    """Polls until every query has a sample (a number, unless ``nan_is_data``); fails naming
    those without."""
    deadline = time.monotonic() + seconds
    while True:
        empty = []
        for name, expr in queries:
            values = await query(expr)
            if not any(nan_is_data or not math.isnan(v) for v in values):
                empty.append(f"{name}: {expr} -> {values}")
        if not empty or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert not empty, "no data:\n" + "\n".join(empty)


async def test_every_rule_and_dashboard_expression_has_data_from_a_real_scrape(
    start_service: Callable[..., Server],
    start_prometheus: Callable[[Server], Server],
    simulator: Server,
    redis_url: str,
) -> None:
    """Prometheus scrapes the service each second with the rules loaded; after traffic, every
    series the rules and the dashboard name exists, every expression has a number, every
    rule evaluates without error, and the host variable lists the engine host."""
    key = made_key(redis_url, unique("monitoring").replace(" ", "-"))
    service = start_service(OLLAMA_SLOTS="1", RATE_LIMIT_MAX="2", AUTH="optional")
    scraper = start_prometheus(service)
    async with httpx.AsyncClient(base_url=scraper.url, timeout=10) as api:

        async def query(expr: str) -> list[float]:
            answer = await api.get("/api/v1/query", params={"query": expr})
            assert answer.status_code == 200, f"{expr}: {answer.text}"
            return [float(r["value"][1]) for r in answer.json()["data"]["result"]]

        # the first scrape comes about 5 s after the start (Prometheus' discovery throttle)
        up = [("up", f'up{{job="{JOB}"}} == 1')]
        await until_all_have_data(query, up, nan_is_data=False, seconds=20)
        await drive(service, key, 1)
        expressions = targets() + rule_queries()
        series = sorted({s for _, expr in expressions for s in selectors(expr)})
        assert len(series) > 20  # the pattern finds them
        await until_all_have_data(query, [(s, s) for s in series], nan_is_data=True, seconds=10)
        await drive(service, key, 2)
        await until_all_have_data(query, expressions, nan_is_data=False, seconds=15)

        groups = (await api.get("/api/v1/rules")).json()["data"]["groups"]
        evaluated = {rule["name"]: rule for group in groups for rule in group["rules"]}
        assert set(evaluated) == {rule.get("record") or rule["alert"] for rule in rules()}
        assert {(r["health"], r.get("lastError", "")) for r in evaluated.values()} == {("ok", "")}
        hosts = await api.get("/api/v1/label/host/values",
                              params={"match[]": "bib_ollama_host_up"})  # fmt: skip
        assert hosts.json()["data"] == [simulator.url]
