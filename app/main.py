"""The application factory: routes, middleware, error handlers and lifespan, nothing else.

Run with ``python -m app`` (which validates settings first), or ``uvicorn app.main:create_app
--factory``. In-process tests call ``create_app(settings, upstream_transport=...)`` with a mock
Ollama transport.
"""

from __future__ import annotations

import logging
import os

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from app.access.identity import AuthenticationMiddleware, TrustedProxiesMiddleware
from app.access.quota_headers import RateLimitMiddleware
from app.api import docs as openapi
from app.api import pipeline as routes
from app.api.ollama import routes as ollama_routes
from app.api.openai import routes as openai_routes
from app.api.relay import BodyShortcutMiddleware
from app.errors import MethodNotAllowed, NotFound, ServiceError
from app.lifespan import lifespan
from app.ops import metrics, probes
from app.ops.request_log import RequestLogMiddleware
from app.responses import error_response
from app.settings import Settings

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, *, upstream_transport: httpx.AsyncBaseTransport | None = None
) -> Starlette:
    settings = settings or Settings.from_environ(os.environ)
    middleware = [
        # first, so that every layer sees the client's address, and identity whether its proxy
        # is trusted (python -m app turns uvicorn's own off)
        Middleware(TrustedProxiesMiddleware, trusted_hosts=settings.forwarded_allow_ips),
        Middleware(BodyShortcutMiddleware),  # a layer that reads body messages must go above it
        Middleware(RequestLogMiddleware),
        Middleware(
            CORSMiddleware,
            allow_origins=settings.allowed_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Last-Event-ID",
                "X-API-Key",
                "X-Request-ID",
            ],
            expose_headers=[
                "X-Cache",
                "X-Generation-ID",
                "X-Request-ID",
                "RateLimit",
                "RateLimit-Policy",
                "Retry-After",
            ],
        ),
    ]
    # on the API routes of every surface, so a 401 is already routed (logs, metrics)
    api = [Middleware(AuthenticationMiddleware)]
    # on the routes that start generations, so a 429 is already routed (logs, metrics)
    limited = list(api)
    if settings.limits_requests:
        limited.append(Middleware(RateLimitMiddleware))
    return Starlette(
        routes=[
            Route(
                "/v1/chats/generate", routes.generate, methods=["GET", "POST"], middleware=limited
            ),
            Route(
                "/v1/chats/generations",
                routes.create_generation,
                methods=["POST"],
                middleware=limited,
            ),
            Route("/v1/chats/generations/{generation}/events", routes.generation_events),
            Route("/v1/chats/generations/{generation}", routes.stop_generation, methods=["DELETE"]),
            Route("/v1/models", openai_routes.models, middleware=api),
            Route(
                "/v1/chat/completions",
                openai_routes.chat_completions,
                methods=["POST"],
                middleware=limited,
            ),
            Route(
                "/v1/completions", openai_routes.completions, methods=["POST"], middleware=limited
            ),
            Route("/api/generate", ollama_routes.generate, methods=["POST"], middleware=limited),
            Route("/api/chat", ollama_routes.chat, methods=["POST"], middleware=limited),
            Route("/api/embed", ollama_routes.embed, methods=["POST"], middleware=limited),
            Route(
                "/api/embeddings",
                ollama_routes.legacy_embeddings,
                methods=["POST"],
                middleware=limited,
            ),
            Route("/v1/embeddings", openai_routes.embeddings, methods=["POST"], middleware=limited),
            Route("/api/tags", ollama_routes.tags, middleware=api),
            Route("/api/ps", ollama_routes.ps, middleware=api),
            Route("/api/show", ollama_routes.show, methods=["POST"], middleware=api),
            Route("/api/version", ollama_routes.version, middleware=api),
            Route("/", ollama_routes.root, methods=["GET", "HEAD"]),
            *(
                Route(path, ollama_routes.manage, methods=methods, middleware=api)
                for path, methods in ollama_routes.MANAGEMENT
            ),
            Route("/livez", probes.livez),
            Route("/readyz", probes.readyz),
            Route("/v1/health", probes.health),
            Route("/metrics", metrics.metrics),
            Route("/openapi.json", openapi.openapi),
            Route("/docs", openapi.docs),
            Route("/playground", openapi.playground),
            Mount("/docs/assets", app=openapi.ASSETS),
        ],
        middleware=middleware,
        exception_handlers={
            ServiceError: _service_error,
            HTTPException: _http_exception,
            Exception: _unexpected_error,
        },
        lifespan=lifespan(settings, upstream_transport),
    )


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)  # Starlette dispatches by the registered class
    return error_response(request.url.path, exc, headers=exc.headers)


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405, in our problem shape."""
    assert isinstance(exc, HTTPException)
    error: ServiceError = MethodNotAllowed() if exc.status_code == 405 else NotFound()
    return error_response(request.url.path, error, headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    """A bug: logged with its trace, answered without one."""
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(request.url.path,
                          ServiceError("The service failed to handle this request."))  # fmt: skip
