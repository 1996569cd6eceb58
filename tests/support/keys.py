"""API keys as a person makes them: ``python -m app keys``, a process of its own."""

from __future__ import annotations

import os
import subprocess

from harness import servers


def keys_command(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m app keys ...`` as a person runs it, with the service's settings."""
    env = {**os.environ, "REDIS_URL": redis_url}
    argv = [servers.PYTHON, "-m", "app", "keys", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)


def made_key(redis_url: str, name: str, *limits: str) -> str:
    """A new API key named ``name`` (``--rate-limit N`` among ``limits``)."""
    created = keys_command(redis_url, "create", name, *limits)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("bib_")
    return key
