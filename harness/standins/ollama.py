#!/usr/bin/env python
"""The stand-in image's `ollama` command: `serve` runs the project's Ollama simulator; `list`
and `pull MODEL` ask the server at OLLAMA_HOST and fail as Ollama's own do when it is not up."""

import json
import os
import sys
import urllib.request


def address() -> str:
    """OLLAMA_HOST as Ollama reads it: scheme and port optional (http, 11434)."""
    host = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434")
    if "://" not in host:
        host = f"http://{host}"
    scheme, rest = host.split("://", 1)
    return f"{scheme}://{rest}" if ":" in rest else f"{scheme}://{rest}:11434"


def main(args: list[str]) -> int:
    if args[:1] == ["serve"]:
        host, port = address().split("://", 1)[1].rsplit(":", 1)
        os.execv(
            sys.executable, [sys.executable, "-m", "simulator", "--host", host, "--port", port]
        )
    try:
        if args[:1] == ["list"]:
            with urllib.request.urlopen(f"{address()}/api/tags", timeout=5) as response:
                models = json.load(response)["models"]
            print("NAME\tSIZE")
            for model in models:
                print(f"{model['name']}\t{model['size']}")
            return 0
        if args[:1] == ["pull"] and len(args) == 2:
            body = json.dumps({"model": args[1]}).encode()
            request = urllib.request.Request(f"{address()}/api/pull", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=60) as response:
                for line in response:
                    progress = json.loads(line)
                    if "error" in progress:
                        print(f"Error: {progress['error']}", file=sys.stderr)
                        return 1
                    print(progress["status"])
            return 0
    except OSError as error:  # urllib's URLError among them
        print(f"Error: could not connect to ollama app, is it running? ({error})", file=sys.stderr)
        return 1
    print("usage: ollama serve | list | pull MODEL", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
