"""``./scripts/bench``: measures the service against baselines run in the same process tree.

Every figure is the median of several interleaved rounds, so a noisy neighbour on the shared
machine shifts baseline and subject alike. Only ratios and medians are worth quoting.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

import orjson

from bench.load import concurrent, cpu_seconds, median, post
from tests import servers

TOKENS = 50
TOKEN_DELAY_SECONDS = 0.02


def relay(rounds: int, stream_counts: Sequence[int]) -> list[list[str]]:
    """CPU per relayed token and time to first token, via each HTTP transport and direct."""
    valkey = servers.valkey().start(ready_path=None)
    ollama = servers.simulator(
        "--tokens", str(TOKENS), "--token-delay", str(TOKEN_DELAY_SECONDS)
    ).start()
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{valkey.port}/0",
        "OLLAMA_HOST": ollama.url,
        "LOG_LEVEL": "warning",
    }
    apps = {name: _bench_app(name, env) for name in ("httpx", "aiohttp")}
    rows = []
    try:
        for count in stream_counts:
            cpu: dict[str, list[float]] = {name: [] for name in apps}
            added_ttft: dict[str, list[float]] = {name: [] for name in apps}
            for round_ in range(rounds):
                direct = _ttft(
                    count,
                    ollama.port,
                    "/api/generate",
                    round_,
                    b'"done":false',
                    b'"done":true',
                    {"model": "llama3.2"},
                )
                for name, app in apps.items():
                    assert app.process is not None
                    before = cpu_seconds(app.process.pid)
                    ttft = _ttft(
                        count,
                        app.port,
                        "/v1/chats/generate",
                        round_,
                        b"event: token",
                        b"event: done",
                        {},
                    )
                    spent = cpu_seconds(app.process.pid) - before
                    cpu[name].append(spent / (count * TOKENS) * 1e6)
                    added_ttft[name].append((ttft - direct) * 1e3)
            rows.append(_row(f"{count} streams: CPU µs per relayed token", cpu, "{:.0f}"))
            rows.append(
                _row(f"{count} streams: added time to first token, ms", added_ttft, "{:.1f}")
            )
    finally:
        for server in (*apps.values(), ollama, valkey):
            server.stop()
    return rows


def _bench_app(transport: str, env: dict[str, str]) -> servers.Server:
    port = servers.free_port()
    argv = [servers.PYTHON, "-m", "bench.serve", "--port", str(port), "--transport", transport]
    return servers.Server(argv, port, env=env).start("/livez")


def _ttft(
    count: int, port: int, path: str, round_: int, first: bytes, last: bytes, extra: dict[str, str]
) -> float:
    """Median time to first token of ``count`` concurrent streams of distinct prompts."""
    requests = [
        post(path, orjson.dumps({"prompt": f"bench {round_} {i}", **extra})) for i in range(count)
    ]
    timings = asyncio.run(concurrent(count, port, requests, first, last))
    return median([t.first_token_seconds for t in timings])


def _row(label: str, values: dict[str, list[float]], fmt: str) -> list[str]:
    baseline, ours = median(values["httpx"]), median(values["aiohttp"])
    ratio = f"{ours / baseline:.2f}x" if baseline > 0 else "n/a"
    return [label, fmt.format(baseline), fmt.format(ours), ratio]


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for index, row in enumerate([header, *rows]):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("| " + " | ".join(cells) + " |")
        if index == 0:
            print("|" + "|".join("-" * (width + 2) for width in widths) + "|")


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per figure")
    parser.add_argument("--streams", type=int, nargs="+", default=[20, 100])
    args = parser.parse_args()
    print(
        f"relay: {TOKENS}-token generations, {TOKEN_DELAY_SECONDS * 1e3:.0f} ms per token, "
        f"one uvicorn worker, medians of {args.rounds} rounds"
    )
    print_table(
        ["measure", "baseline: httpx default transport", "ours: httpx over aiohttp", "ours/base"],
        relay(args.rounds, args.streams),
    )


if __name__ == "__main__":
    main()
