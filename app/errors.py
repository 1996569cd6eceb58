"""The service's error tree; each error knows its HTTP status and its machine-readable code.

    ServiceError
    ├── InvalidJSON 400            ├── UpstreamUnavailable 503 (Ollama down, refusing, busy)
    ├── Unsupported 400 (a field of another API that the service cannot honour)
    ├── Unauthorized 401 (no valid API key where one is needed)
    ├── Forbidden 403 (model management, which is done on the Ollama host)
    │   └── ModelNotAllowed 403 (a model the client's key, or anonymity, does not allow)
    ├── TooLarge 413               ├── UpstreamError 502 (Ollama 5xx or garbage)
    ├── InvalidRequest 422         ├── UpstreamTimeout 504 (first token or idle timeout)
    ├── RateLimited 429            ├── RateLimitUnavailable 503 (quotas' Redis down, failing closed)
    │                              ├── AuthUnavailable 503 (keys cannot be checked, AUTH=required)
    │                              ├── UsageUnavailable 503 (a key's usage cannot be read now)
    ├── ShuttingDown 503 (draining: no new generations; open streams end with it)
    ├── QueueTimeout 503 (no GPU slot within QUEUE_TIMEOUT)
    ├── NotFound 404               ├── ModelNotFound 404 (Ollama does not know the model)
    └── MethodNotAllowed 405       └── Cancelled (stopped by a client, or nobody was reading)

Before a response starts an error is an ``application/problem+json`` body (RFC 9457); after a
stream has started it is an ``error`` event with the same ``error`` and ``detail``.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, ClassVar


class ServiceError(Exception):
    """Base of every error the service reports to a client."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, detail: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        self.detail = detail or HTTPStatus(self.status_code).phrase
        self.headers = dict(headers or {})
        super().__init__(self.detail)

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 body: status, title, detail and our ``error`` code."""
        return {
            "status": self.status_code,
            "title": HTTPStatus(self.status_code).phrase,
            "detail": self.detail,
            "error": self.code,
        }


class InvalidJSON(ServiceError):
    status_code = 400
    code = "invalid_json"


class Unsupported(ServiceError):
    """A field of another API that the service cannot honour; ``field`` names it. Refused
    rather than ignored, so that nobody relies on what does not happen."""

    status_code = 400
    code = "unsupported"

    def __init__(self, detail: str | None = None, field: str | None = None) -> None:
        super().__init__(detail or f"{field} is not supported by this service.")
        self.field = field


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class AuthUnavailable(ServiceError):
    """With ``AUTH=required``, Redis is down and the key is not one this worker knows."""

    status_code = 503
    code = "auth_unavailable"


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class ModelNotAllowed(Forbidden):
    code = "model_not_allowed"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class MethodNotAllowed(ServiceError):
    status_code = 405
    code = "method_not_allowed"


class TooLarge(ServiceError):
    status_code = 413
    code = "too_large"


class InvalidRequest(ServiceError):
    """A request that is JSON but does not fit the schema; ``fields`` maps each field to why."""

    status_code = 422
    code = "invalid_request"

    def __init__(self, detail: str, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.fields = dict(fields or {})

    @classmethod
    def listing(cls, problems: Mapping[str, str]) -> InvalidRequest:
        """Every problem of a request at once, each keyed by its field's path."""
        return cls("; ".join(f"{name} {why}" for name, why in problems.items()) + ".", problems)

    def problem(self) -> dict[str, Any]:
        return {**super().problem(), "fields": self.fields}


class RateLimited(ServiceError):
    """``quota`` names the one that refused: ``requests``, ``tokens``, ``concurrency`` or
    ``queue``. Its headers say when to come back (``Retry-After``, whole seconds) and that the
    refusal is not to be stored, beside ``headers`` (the quotas' own)."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, detail: str | None = None, quota: str = "requests", *,
                 retry_after_seconds: int = 1,
                 headers: Mapping[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(detail, {**(headers or {}), "Retry-After": str(retry_after_seconds),
                                  "Cache-Control": "no-store"})  # fmt: skip
        self.quota = quota

    def problem(self) -> dict[str, Any]:
        return {**super().problem(), "quota": self.quota}


class ShuttingDown(ServiceError):
    status_code = 503
    code = "shutting_down"


class RateLimitUnavailable(ServiceError):
    status_code = 503
    code = "rate_limit_unavailable"


class UsageUnavailable(ServiceError):
    """``GET /v1/usage`` while Redis, which holds the usage, does not answer."""

    status_code = 503
    code = "usage_unavailable"


class QueueTimeout(ServiceError):
    """A generation waited ``QUEUE_TIMEOUT`` for a GPU slot."""

    status_code = 503
    code = "queue_timeout"


class ModelNotFound(ServiceError):
    status_code = 404
    code = "model_not_found"


class UpstreamError(ServiceError):
    status_code = 502
    code = "upstream_error"


class UpstreamFailed(UpstreamError):
    """The Ollama host itself failed (a 5xx, or the connection dropped): worth another host."""


class UpstreamUnavailable(ServiceError):
    status_code = 503
    code = "upstream_unavailable"


class UpstreamTimeout(ServiceError):
    status_code = 504
    code = "upstream_timeout"


class Cancelled(ServiceError):
    """Only ever an ``error`` event: a generation that was stopped has no status of its own."""

    status_code = 503
    code = "cancelled"


def _by_code() -> dict[str, type[ServiceError]]:
    """Every error class that names its own code (``UpstreamFailed`` shares its parent's)."""
    found: dict[str, type[ServiceError]] = {}
    pending: list[type[ServiceError]] = [ServiceError]
    while pending:
        kind = pending.pop()
        if "code" in vars(kind):
            found[kind.code] = kind
        pending.extend(kind.__subclasses__())
    return found


_BY_CODE = _by_code()


def error_for(code: str, detail: str) -> ServiceError:
    """Rebuilds an error that another worker published, from its code."""
    return _BY_CODE.get(code, UpstreamError)(detail)
