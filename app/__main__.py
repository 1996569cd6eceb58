"""``python -m app``: validates the settings, then serves with uvicorn.

A bad setting stops start-up here with one line naming the variable, before any worker starts.
"""

from __future__ import annotations

import os
import sys

import uvicorn

from app.settings import Settings


def main() -> None:
    try:
        settings = Settings.from_environ(os.environ)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.web_concurrency,
        log_level=settings.log_level,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        proxy_headers=True,
        # after the app's own drain (SHUTDOWN_GRACE), only stragglers are left to cut off
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
    )


if __name__ == "__main__":
    main()
