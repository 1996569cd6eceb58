"""The application factory: the surfaces' routes joined, middleware, error handlers and lifespan,
nothing else.

Run with ``python -m app`` (which validates settings first), or ``uvicorn app.main:create_app
--factory``. In-process tests call ``create_app(settings, upstream_transport=...)`` with a mock
transport to the engines.
"""

from __future__ import annotations

import os

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from app.access.identity import TrustedProxiesMiddleware
from app.api import docs
from app.api.anthropic import routes as anthropic
from app.api.native import routes as native
from app.api.native import usage
from app.api.ollama import routes as ollama
from app.api.ollama.wire import error_response as ollama_errors
from app.api.openai import routes as openai
from app.api.openai.responses import routes as responses
from app.api.relay import BodyShortcutMiddleware
from app.api.routing import error_handlers
from app.lifespan import lifespan
from app.ops import probes, tracing
from app.ops.request_log import RequestLogMiddleware
from app.ops.tracing import TracingMiddleware
from app.settings import Settings


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
        # traced only when the OTEL_* environment asks (app.ops.tracing); else not even a layer
        *([Middleware(TracingMiddleware)] if tracing.traces_wanted(os.environ) else []),
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
                "X-Priority",
                "X-Session-ID",
                "traceparent",  # W3C trace context, continued when tracing is on
                "tracestate",
            ],
            expose_headers=[
                "X-Cache",
                "X-Generation-ID",
                "X-Upstream-Host",
                "X-Request-ID",
                "RateLimit",
                "RateLimit-Policy",
                "Retry-After",
            ],
        ),
    ]
    return Starlette(
        routes=[
            *native.ROUTES,
            *usage.ROUTES,
            *openai.ROUTES,
            *responses.ROUTES,
            *anthropic.ROUTES,
            *ollama.ROUTES,
            *probes.ROUTES,
            *docs.ROUTES,
        ],
        middleware=middleware,
        exception_handlers=error_handlers(unmatched={ollama.PREFIX: ollama_errors}),
        lifespan=lifespan(settings, upstream_transport),
    )
