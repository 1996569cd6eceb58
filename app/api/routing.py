"""Routes that know their surface: each carries the error shape of the API it belongs to, so that
an error is answered as its client parses errors, and the exception handlers ``create_app``
registers find that shape on the route, never by matching the URL.

A path that matches no route has no surface, so its ``404`` takes the shape of the surface that
claims its prefix (``/api/`` is Ollama's), else the RFC 9457 problem document; so does
anything else the service answers (probes, docs). Starlette's own ``404`` and ``405`` and an
unexpected exception (a bug: logged with its trace, answered without one) come out the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from app.access.identity import AuthenticationMiddleware
from app.errors import MethodNotAllowed, NotFound, RateLimited, ServiceError
from app.ops.request_log import facts
from app.responses import problem

logger = logging.getLogger(__name__)

ErrorShape = Callable[[ServiceError], Response]  # the error, its headers included, as a body


class SurfaceRoute(Route):
    """A route of one API surface, answering errors in that surface's shape (``errors``).
    ``keyed`` (the default): an API route, where the request's API key or identity is found
    (``app.access.identity``), so that a ``401`` is already routed for the logs and metrics."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, errors: ErrorShape,
                 methods: Sequence[str] | None = None, keyed: bool = True) -> None:  # fmt: skip
        middleware = [Middleware(AuthenticationMiddleware)] if keyed else None
        super().__init__(path, endpoint, methods=list(methods) if methods else None,
                         middleware=middleware)  # fmt: skip
        self.errors = errors


def error_handlers(unmatched: Mapping[str, ErrorShape]) -> dict[Any, Any]:
    """The exception handlers of the app; ``unmatched``: the shape of a path that matches no
    route, by the prefix a surface claims."""

    def shape(request: Request) -> ErrorShape:
        route = request.scope.get("route")
        if isinstance(route, SurfaceRoute):
            return route.errors
        if route is None:
            path = request.url.path
            for prefix, errors in unmatched.items():
                if path.startswith(prefix):
                    return errors
        return problem

    async def service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)  # Starlette dispatches by the registered class
        noted = facts(request.scope)
        noted.error = exc.code
        if isinstance(exc, RateLimited):
            noted.refused = exc.quota
        return shape(request)(exc)

    async def http_exception(request: Request, exc: Exception) -> Response:
        """Starlette's own 404 and 405."""
        assert isinstance(exc, HTTPException)
        error: ServiceError = MethodNotAllowed() if exc.status_code == 405 else NotFound()
        error.headers.update(exc.headers or {})
        return shape(request)(error)

    async def client_gone(request: Request, exc: Exception) -> Response:
        """The client hung up while sending its body: nobody reads the answer, and it is not
        the service's error to log."""
        return Response(status_code=499)

    async def unexpected_error(request: Request, exc: Exception) -> Response:
        """A bug: logged with its trace, answered without one."""
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return shape(request)(ServiceError("The service failed to handle this request."))

    return {ServiceError: service_error, HTTPException: http_exception,
            ClientDisconnect: client_gone, Exception: unexpected_error}  # fmt: skip
