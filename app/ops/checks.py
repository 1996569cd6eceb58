"""Dependency checks behind the probes, each bounded to a second and cached for a second.

A probe storm (every replica's orchestrator, dashboards, people) then costs Ollama and Redis at
most one check a second per worker, and a probe never waits longer than the check timeout, even
when a dependency hangs. Concurrent probes share one check instead of each starting their own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """A check's result: ``value`` when it passed, ``output`` saying why when it failed."""

    passed: bool
    value: T | None = None
    output: str = ""

    def report(self) -> list[dict[str, Any]]:
        """The entry of an ``application/health+json`` ``checks`` object."""
        if self.passed:
            return [{"status": "pass"}]
        return [{"status": "fail", "output": self.output}]


class CachedCheck(Generic[T]):
    """Runs ``check`` at most once per ``cache_seconds``, bounded by ``timeout_seconds``."""

    def __init__(
        self,
        check: Callable[[], Awaitable[T]],
        *,
        timeout_seconds: float = 1.0,
        cache_seconds: float = 1.0,
    ) -> None:
        self._check = check
        self._timeout_seconds = timeout_seconds
        self._cache_seconds = cache_seconds
        self._lock = asyncio.Lock()
        self._outcome: Outcome[T] | None = None
        self._checked_at = 0.0

    async def __call__(self) -> Outcome[T]:
        async with self._lock:
            if self._outcome is None or time.monotonic() - self._checked_at > self._cache_seconds:
                self._outcome = await self._run()
                self._checked_at = time.monotonic()
            return self._outcome

    async def _run(self) -> Outcome[T]:
        try:
            with anyio.fail_after(self._timeout_seconds):
                return Outcome(True, await self._check())
        except TimeoutError:
            return Outcome(False, output=f"no answer within {self._timeout_seconds:g} s")
        except Exception as exc:  # any failure of a dependency is a failed check, not a 500
            return Outcome(False, output=str(exc) or type(exc).__name__)
