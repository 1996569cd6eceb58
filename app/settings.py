"""Service settings, read once from an environment mapping into a frozen value.

Nothing else in the service reads the environment. A bad value raises ``ValueError`` with one
line that names the variable and what it accepts; ``python -m app`` prints that line and exits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.config import Config

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
HTTP_URL = re.compile(r"https?://[^\s/]+(/\S*)?")
AUTH_MODES = ("off", "optional", "required")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
# what each upstream engine speaks: Ollama's API, or OpenAI's with that server's differences
ENGINES = ("ollama", "vllm", "sglang", "llamacpp", "lmstudio", "openai")
BANDS = ("interactive", "batch")  # the GPU queue's priority bands, the first served first
SECRET_VARIABLES = frozenset({"UPSTREAMS"})  # never echoed: a spec may hold a key


@dataclass(frozen=True, slots=True)
class Upstream:
    """One engine server: its base URL, what it speaks, its slots (0: no queue) and its key."""

    url: str
    engine: str = "ollama"
    slots: int = 0
    key: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the service; field docs give the environment variable and the unit."""

    ollama_host: str = "http://localhost:11434"  # OLLAMA_HOST
    ollama_hosts: tuple[
        str, ...
    ] = ()  # OLLAMA_HOSTS, comma-separated, each URL with an optional ;slots=N
    upstreams: tuple[Upstream, ...] = ()  # UPSTREAMS: url;engine=NAME;slots=N;key=K, …
    ollama_slots: int = 0  # OLLAMA_SLOTS, generations at once per host; 0: no gateway queue
    ollama_refresh_seconds: float = 5.0  # OLLAMA_REFRESH_INTERVAL, each host's /api/tags
    ollama_eject_seconds: float = 1.0  # OLLAMA_EJECT_SECONDS, a failed host's first cool-down
    ollama_eject_max_seconds: float = 30.0  # OLLAMA_EJECT_MAX_SECONDS, doubling stops here
    redis_url: str = field(default="redis://localhost:6379/0", repr=False)  # REDIS_URL
    redis_max_connections: int = 64  # REDIS_MAX_CONNECTIONS, a worker's connections, per node
    cache_ttl_seconds: int = 3600  # CACHE_TTL, 0 turns caching off
    cache_max_bytes: int = 1024 * 1024  # CACHE_MAX_BYTES, larger completions are not cached
    cache_local_seconds: float = 10.0  # CACHE_LOCAL_SECONDS, a worker's copy of a hot entry
    responses_ttl_seconds: int = 3600  # RESPONSES_TTL, a stored OpenAI response is kept this long
    usage_retention_days: int = 90  # USAGE_RETENTION_DAYS, the days of keys' usage kept
    rate_limit_max: int = 10  # RATE_LIMIT_MAX, requests per window and client; 0: no limit
    rate_limit_window_seconds: int = 60  # RATE_LIMIT_WINDOW
    rate_limit_fail_open: bool = True  # RATE_LIMIT_FAIL_OPEN, for every quota
    token_limit_max: int = 0  # TOKEN_LIMIT_MAX, Ollama's tokens per window and client; 0: none
    token_limit_window_seconds: int = 60  # TOKEN_LIMIT_WINDOW
    concurrency_limit: int = 0  # CONCURRENCY_LIMIT, generations running per client; 0: no cap
    allowed_origins: tuple[str, ...] = ("*",)  # ALLOWED_ORIGINS, comma-separated
    default_model: str = "llama3.2"  # DEFAULT_MODEL
    heartbeat_interval_seconds: float = 15.0  # HEARTBEAT_INTERVAL
    upstream_timeout_seconds: float = 300.0  # UPSTREAM_TIMEOUT, first token incl. model load
    upstream_idle_timeout_seconds: float = 60.0  # UPSTREAM_IDLE_TIMEOUT, between tokens
    max_body_bytes: int = 1024 * 1024  # MAX_BODY_BYTES
    send_timeout_seconds: float = 30.0  # SEND_TIMEOUT, a client that reads nothing this long goes
    shutdown_grace_seconds: float = 30.0  # SHUTDOWN_GRACE
    resume_grace_seconds: float = 5.0  # RESUME_GRACE
    web_concurrency: int = 1  # WEB_CONCURRENCY, uvicorn worker processes
    forwarded_allow_ips: str = "127.0.0.1"  # FORWARDED_ALLOW_IPS, handed to uvicorn
    host: str = "127.0.0.1"  # HOST
    port: int = 8000  # PORT
    log_level: str = "info"  # LOG_LEVEL
    log_format: str = "json"  # LOG_FORMAT, json (one object per line) or text
    ollama_management: bool = False  # OLLAMA_MANAGEMENT, true: pull, delete, … reach the hosts
    auth: str = "off"  # AUTH: off, optional (a valid key gets its limits) or required
    identity_header: str = ""  # IDENTITY_HEADER, believed from FORWARDED_ALLOW_IPS only
    request_head_timeout_seconds: float = 10.0  # REQUEST_HEAD_TIMEOUT, for a request's head
    request_body_timeout_seconds: float = 30.0  # REQUEST_BODY_TIMEOUT, for its body
    queue_max_per_client: int = 20  # QUEUE_MAX_PER_CLIENT, queued generations per client
    queue_timeout_seconds: float = 300.0  # QUEUE_TIMEOUT, the longest a generation waits
    queue_batch_max_wait_seconds: float = 60.0  # QUEUE_BATCH_MAX_WAIT, then batch is served too
    anonymous_priority: str = "interactive"  # ANONYMOUS_PRIORITY, the band of keyless clients
    affinity_ttl_seconds: int = 600  # AFFINITY_TTL, a prefix remembers its host; 0: no affinity
    affinity_spill: int = 2  # AFFINITY_SPILL, generations busier than the least busy host
    strip_volatile_prompt: bool = False  # STRIP_VOLATILE_PROMPT, e.g. Claude Code's billing line
    model_aliases: tuple[tuple[str, str], ...] = ()  # MODEL_ALIASES, alias=model,...
    anonymous_models: tuple[str, ...] = ()  # ANONYMOUS_MODELS, patterns; empty: every model

    @property
    def limits_requests(self) -> bool:
        """Whether any request may be limited: by a default quota, or as a key with its own."""
        quotas = (self.rate_limit_max, self.token_limit_max, self.concurrency_limit)
        return any(quotas) or self.auth != "off"

    @property
    def engines(self) -> tuple[Upstream, ...]:
        """The engine servers to use: ``UPSTREAMS``; else ``OLLAMA_HOSTS``, else the one
        ``OLLAMA_HOST``, as Ollama servers. A server without its own slots has
        ``OLLAMA_SLOTS``."""
        given = (
            self.upstreams
            or tuple(
                Upstream(url, slots=int(slots) if slots else 0)
                for url, _, slots in (spec.partition(";slots=") for spec in self.ollama_hosts)
            )
            or (Upstream(self.ollama_host),)
        )
        return tuple(replace(u, slots=u.slots or self.ollama_slots) for u in given)

    @property
    def upstream_urls(self) -> tuple[str, ...]:
        return tuple(upstream.url for upstream in self.engines)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        """Reads the settings from ``environ``; unset or empty variables keep their defaults."""
        config = Config(environ=environ)
        defaults = cls()
        values: dict[str, Any] = {}  # each checked by its parser
        for name, variable, parse, accepts in _VARIABLES:
            raw = config(variable, default=None)
            if raw is None or raw == "":
                continue
            try:
                values[name] = parse(raw)
            except ValueError:
                shown = "…" if variable in SECRET_VARIABLES else repr(raw)
                raise ValueError(f"{variable}={shown} is invalid: expected {accepts}") from None
        ollama = [v for v in ("OLLAMA_HOST", "OLLAMA_HOSTS") if config(v, default="")]
        if values.get("upstreams") and ollama:
            raise ValueError(f"UPSTREAMS and {' and '.join(ollama)} are both set: "
                             "give the Ollama servers in UPSTREAMS instead")  # fmt: skip
        return replace(defaults, **values)


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError(raw)
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError(raw)
    return value


def _positive_float(raw: str) -> float:
    value = _non_negative_float(raw)
    if value == 0:
        raise ValueError(raw)
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not 0 <= value < float("inf"):
        raise ValueError(raw)
    return value


def _connections(raw: str) -> int:
    value = int(raw)
    if value < 3:  # two are held outside the gate (app/lifespan.py), and one command must run
        raise ValueError(raw)
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65535:
        raise ValueError(raw)
    return value


def _boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(raw)


def _http_url(raw: str) -> str:
    if not HTTP_URL.fullmatch(raw):
        raise ValueError(raw)
    return raw.rstrip("/")


def _http_urls(raw: str) -> tuple[str, ...]:
    """Distinct URLs, each with an optional ``;slots=N`` (N >= 1), kept as given."""
    specs = []
    for part in (part.strip() for part in raw.split(",")):
        if part:
            url, _, slots = part.partition(";")
            if slots and not re.fullmatch(r"slots=[1-9][0-9]*", slots):
                raise ValueError(raw)
            specs.append(_http_url(url.strip()) + (f";{slots}" if slots else ""))
    urls = [spec.partition(";")[0] for spec in specs]
    if not urls or len(set(urls)) != len(urls):
        raise ValueError(raw)
    return tuple(specs)


def _upstreams(raw: str) -> tuple[Upstream, ...]:
    """Distinct URLs, each with optional ``;engine=NAME``, ``;slots=N`` (N >= 1), ``;key=K``."""
    found = []
    for part in (part.strip() for part in raw.split(",")):
        if part:
            url, *options = (piece.strip() for piece in part.split(";"))
            named = dict(option.partition("=")[::2] for option in options)
            if len(named) != len(options) or not named.keys() <= {"engine", "slots", "key"}:
                raise ValueError(raw)
            engine, slots = named.get("engine", "ollama"), named.get("slots", "")
            if engine not in ENGINES or (slots and not re.fullmatch(r"[1-9][0-9]*", slots)):
                raise ValueError(raw)
            found.append(Upstream(_http_url(url), engine, int(slots or 0), named.get("key", "")))
    urls = [upstream.url for upstream in found]
    if not urls or len(set(urls)) != len(urls):
        raise ValueError(raw)
    return tuple(found)


def _redis_url(raw: str) -> str:
    if not re.fullmatch(r"(redis|rediss)(\+cluster)?://\S*|unix://\S*", raw):
        raise ValueError(raw)
    return raw


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not origins or any(o != "*" and not HTTP_URL.fullmatch(o) for o in origins):
        raise ValueError(raw)
    return origins


def _model_name(raw: str) -> str:
    if not MODEL_NAME.fullmatch(raw):
        raise ValueError(raw)
    return raw


def model_patterns(raw: str) -> tuple[str, ...]:
    """An allow-list: model names, ``*`` and ``?`` patterns, comma-separated; empty: all."""
    patterns = tuple(part.strip() for part in raw.split(",") if part.strip())
    for pattern in patterns:
        if not MODEL_NAME.fullmatch(pattern.replace("*", "x").replace("?", "x")):
            raise ValueError(raw)
    return patterns


def model_aliases(raw: str) -> tuple[tuple[str, str], ...]:
    """``alias=model`` pairs, comma-separated: the names a client may ask for, and what serves
    them."""
    pairs = []
    for part in (part.strip() for part in raw.split(",")):
        alias, equals, target = (side.strip() for side in part.partition("="))
        if part and not (equals and MODEL_NAME.fullmatch(alias) and MODEL_NAME.fullmatch(target)):
            raise ValueError(raw)
        if part:
            pairs.append((alias, target))
    return tuple(pairs)


def _log_format(raw: str) -> str:
    if raw not in ("json", "text"):
        raise ValueError(raw)
    return raw


def _auth(raw: str) -> str:
    if raw not in AUTH_MODES:
        raise ValueError(raw)
    return raw


def _header_name(raw: str) -> str:
    if raw and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", raw):
        raise ValueError(raw)
    return raw.lower()


def _band(raw: str) -> str:
    if raw not in BANDS:
        raise ValueError(raw)
    return raw


def _log_level(raw: str) -> str:
    lowered = raw.lower()
    if lowered not in LOG_LEVELS:
        raise ValueError(raw)
    return lowered


# field, environment variable, parser, what it accepts (for the one-line error)
_VARIABLES: tuple[tuple[str, str, Callable[[str], object], str], ...] = (
    ("ollama_host", "OLLAMA_HOST", _http_url, "an http(s) URL"),
    ("ollama_hosts", "OLLAMA_HOSTS", _http_urls, "distinct http(s) URLs, each maybe ;slots=N"),
    (
        "upstreams",
        "UPSTREAMS",
        _upstreams,
        f"distinct http(s) URLs, each maybe ;engine={'|'.join(ENGINES)}, ;slots=N, ;key=K",
    ),
    ("ollama_slots", "OLLAMA_SLOTS", _non_negative_int, "an integer >= 0"),
    ("ollama_refresh_seconds", "OLLAMA_REFRESH_INTERVAL", _positive_float, "seconds > 0"),
    ("ollama_eject_seconds", "OLLAMA_EJECT_SECONDS", _positive_float, "seconds > 0"),
    ("ollama_eject_max_seconds", "OLLAMA_EJECT_MAX_SECONDS", _positive_float, "seconds > 0"),
    ("redis_url", "REDIS_URL", _redis_url, "a redis:// or redis+cluster:// URL"),
    ("redis_max_connections", "REDIS_MAX_CONNECTIONS", _connections, "an integer >= 3"),
    ("cache_ttl_seconds", "CACHE_TTL", _non_negative_int, "seconds >= 0"),
    ("cache_max_bytes", "CACHE_MAX_BYTES", _positive_int, "bytes >= 1"),
    ("cache_local_seconds", "CACHE_LOCAL_SECONDS", _non_negative_float, "seconds >= 0"),
    ("responses_ttl_seconds", "RESPONSES_TTL", _positive_int, "seconds >= 1"),
    ("usage_retention_days", "USAGE_RETENTION_DAYS", _positive_int, "whole days >= 1"),
    ("rate_limit_max", "RATE_LIMIT_MAX", _non_negative_int, "an integer >= 0"),
    ("rate_limit_window_seconds", "RATE_LIMIT_WINDOW", _positive_int, "whole seconds >= 1"),
    ("rate_limit_fail_open", "RATE_LIMIT_FAIL_OPEN", _boolean, "true or false"),
    ("token_limit_max", "TOKEN_LIMIT_MAX", _non_negative_int, "an integer >= 0"),
    ("token_limit_window_seconds", "TOKEN_LIMIT_WINDOW", _positive_int, "whole seconds >= 1"),
    ("concurrency_limit", "CONCURRENCY_LIMIT", _non_negative_int, "an integer >= 0"),
    ("allowed_origins", "ALLOWED_ORIGINS", _origins, "* or comma-separated URLs"),
    ("default_model", "DEFAULT_MODEL", _model_name, "an Ollama model name"),
    ("heartbeat_interval_seconds", "HEARTBEAT_INTERVAL", _positive_float, "seconds > 0"),
    ("upstream_timeout_seconds", "UPSTREAM_TIMEOUT", _positive_float, "seconds > 0"),
    ("upstream_idle_timeout_seconds", "UPSTREAM_IDLE_TIMEOUT", _positive_float, "seconds > 0"),
    ("max_body_bytes", "MAX_BODY_BYTES", _positive_int, "bytes >= 1"),
    ("send_timeout_seconds", "SEND_TIMEOUT", _positive_float, "seconds > 0"),
    ("shutdown_grace_seconds", "SHUTDOWN_GRACE", _non_negative_float, "seconds >= 0"),
    ("resume_grace_seconds", "RESUME_GRACE", _non_negative_float, "seconds >= 0"),
    ("web_concurrency", "WEB_CONCURRENCY", _positive_int, "an integer >= 1"),
    ("forwarded_allow_ips", "FORWARDED_ALLOW_IPS", str, "addresses or *"),
    ("host", "HOST", str, "an interface address"),
    ("port", "PORT", _port, "a port from 1 to 65535"),
    ("log_level", "LOG_LEVEL", _log_level, "|".join(LOG_LEVELS)),
    ("log_format", "LOG_FORMAT", _log_format, "json or text"),
    ("ollama_management", "OLLAMA_MANAGEMENT", _boolean, "true or false"),
    ("auth", "AUTH", _auth, ", ".join(AUTH_MODES)),
    ("identity_header", "IDENTITY_HEADER", _header_name, "an HTTP header name"),
    ("request_head_timeout_seconds", "REQUEST_HEAD_TIMEOUT", _positive_float, "seconds > 0"),
    ("request_body_timeout_seconds", "REQUEST_BODY_TIMEOUT", _positive_float, "seconds > 0"),
    ("queue_max_per_client", "QUEUE_MAX_PER_CLIENT", _positive_int, "an integer >= 1"),
    ("queue_timeout_seconds", "QUEUE_TIMEOUT", _positive_float, "seconds > 0"),
    ("queue_batch_max_wait_seconds", "QUEUE_BATCH_MAX_WAIT", _positive_float, "seconds > 0"),
    ("anonymous_priority", "ANONYMOUS_PRIORITY", _band, " or ".join(BANDS)),
    ("affinity_ttl_seconds", "AFFINITY_TTL", _non_negative_int, "seconds >= 0"),
    ("affinity_spill", "AFFINITY_SPILL", _non_negative_int, "an integer >= 0"),
    ("strip_volatile_prompt", "STRIP_VOLATILE_PROMPT", _boolean, "true or false"),
    ("model_aliases", "MODEL_ALIASES", model_aliases, "alias=model pairs, comma-separated"),
    ("anonymous_models", "ANONYMOUS_MODELS", model_patterns, "names or patterns, comma-separated"),
)
