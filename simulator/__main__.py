"""``python -m simulator``: serves the Ollama simulator (default port 11434, like Ollama), or
with ``--engine vllm`` vLLM's OpenAI-compatible API (default port 8000, like vLLM)."""

from __future__ import annotations

import argparse

import uvicorn

from simulator.app import ENGINES, FAULTS, Behaviour, create_app

DEFAULTS = Behaviour()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="11434, or 8000 for vllm")
    parser.add_argument("--engine", choices=ENGINES, default=DEFAULTS.engine, help="whose API")
    parser.add_argument("--tokens", type=int, default=DEFAULTS.tokens, help="tokens per answer")
    parser.add_argument(
        "--token-delay", type=float, default=DEFAULTS.token_delay, help="seconds between tokens"
    )
    parser.add_argument(
        "--first-token-delay",
        type=float,
        default=DEFAULTS.first_token_delay,
        help="seconds before the first token (a model load)",
    )
    parser.add_argument(
        "--prefill-delay",
        type=float,
        default=DEFAULTS.prefill_delay,
        help="seconds per prompt token not in its prompt cache",
    )
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument("--fault-after", type=int, default=DEFAULTS.fault_after)
    parser.add_argument(
        "--models", default=",".join(DEFAULTS.models), help="comma-separated models it has"
    )
    parser.add_argument(
        "--tags-delay", type=float, default=DEFAULTS.tags_delay, help="seconds /api/tags takes"
    )
    parser.add_argument("--max-num-seqs", type=int, default=DEFAULTS.max_running,
                        help="generations at once (vLLM's flag); more wait; 0: no cap")  # fmt: skip
    args = parser.parse_args()
    behaviour = Behaviour(
        tokens=args.tokens,
        token_delay=args.token_delay,
        first_token_delay=args.first_token_delay,
        prefill_delay=args.prefill_delay,
        fault=args.fault,
        fault_after=args.fault_after,
        models=tuple(name.strip() for name in args.models.split(",") if name.strip()),
        tags_delay=args.tags_delay,
        engine=args.engine,
        max_running=args.max_num_seqs,
    )
    uvicorn.run(
        create_app(behaviour),
        host=args.host,
        port=(8000 if args.engine == "vllm" else 11434) if args.port is None else args.port,
        log_level="warning",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
