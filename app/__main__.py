"""``python -m app``: validates the settings, then serves with uvicorn.

A bad setting stops start-up here with one line naming the variable, before any worker starts.
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile

import uvicorn

from app.logs import uvicorn_config
from app.settings import Settings


def main() -> None:
    try:
        settings = Settings.from_environ(os.environ)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    _prepare_metrics_directory()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.web_concurrency,
        log_level=settings.log_level,
        log_config=uvicorn_config(settings.log_level, settings.log_format),
        access_log=False,  # app.requestlog logs each request, with more to say
        forwarded_allow_ips=settings.forwarded_allow_ips,
        proxy_headers=True,
        # after the app's own drain (SHUTDOWN_GRACE), only stragglers are left to cut off
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
    )


def _prepare_metrics_directory() -> None:
    """Where workers keep their metric samples: given, or made; emptied of a former run's."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(
        prefix="bib-metrics-"
    )
    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.remove(stale)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


if __name__ == "__main__":
    main()
