"""The suite's settings for the app, and the project's files the tests read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parent.parent.parent
# Small numbers keep the suite fast; tests that need others start their own app.
SERVICE_ENV = {
    "HEARTBEAT_INTERVAL": "1",
    "UPSTREAM_TIMEOUT": "5",
    "UPSTREAM_IDLE_TIMEOUT": "2",
    "RESUME_GRACE": "0",
    "RATE_LIMIT_MAX": "1000000",  # on, so every test passes through it, but out of the way
    "SHUTDOWN_GRACE": "2",
    "LOG_LEVEL": "warning",
}


def compose() -> dict[str, Any]:
    """compose.yaml, parsed."""
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded
