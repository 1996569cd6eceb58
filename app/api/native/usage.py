"""``GET /v1/usage``: what the calling API key used (``app.store.usage``), for a window of UTC
days from ``start`` to ``end`` (``YYYY-MM-DD``, both included; by default the last seven days),
within ``USAGE_RETENTION_DAYS``: totals, per model and per day, every day of the window present.

A key reads its own use and nobody else's, so the route is keyed and a request without a key is
``401``, under ``AUTH=off`` too (no key is read there, and no use recorded). It counts against no
quota. The body is live, so it says ``no-store``; Redis down is ``503`` ``usage_unavailable``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from app.access.identity import identity
from app.api.routing import SurfaceRoute
from app.errors import InvalidRequest, Unauthorized, UsageUnavailable
from app.lifespan import State
from app.responses import NO_STORE, JSONBody, problem
from app.store.client import RedisUnavailable
from app.store.usage import BadWindow, Report, window


async def usage(request: Request[State]) -> Response:
    asking = identity(request.scope)
    if asking.key is None:
        raise Unauthorized("Usage is kept per API key: send yours (Authorization: Bearer <key>).")
    recorded = request.state["usage"]
    asked = request.query_params
    try:
        start, end = window(asked.get("start"), asked.get("end"), today=recorded.today(),
                            retention_days=recorded.retention_days)  # fmt: skip
    except BadWindow as exc:
        raise InvalidRequest.listing(exc.problems) from None
    try:
        report = await recorded.report(asking.client, start, end)
    except RedisUnavailable:
        raise UsageUnavailable("Usage cannot be read now; try again soon.") from None
    return JSONBody(_body(asking.key.name, report), headers=NO_STORE)


def _body(name: str, report: Report) -> dict[str, Any]:
    """The answer: the key's name, the window, and the counts in total, per model, per day."""
    return {
        "key": name,
        "start": report.start.isoformat(),
        "end": report.end.isoformat(),
        "totals": report.totals.as_dict(),
        "by_model": {model: counts.as_dict() for model, counts in report.by_model.items()},
        "by_day": {day.isoformat(): counts.as_dict() for day, counts in report.by_day.items()},
    }


ROUTES = [SurfaceRoute("/v1/usage", usage, errors=problem, methods=["GET"])]
