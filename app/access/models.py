"""Which models a client may ask for, and by which names: ``Models``, one client's view.

- **Aliases**: ``MODEL_ALIASES`` (``gpt-4o=llama3.2,...``), and a key's own over them. A
  request for an alias is served by its target on every surface: the request's ``model`` is
  the target before any surface reads it (``resolved``), so alias and target share the cache,
  live joins and resumes, and what a surface asks an engine (``/api/show``, token counts)
  names a model the engine has. The answer says the name the client asked for (``shown``).
- **Allow-lists**: a key's ``models`` (patterns: ``llama3.2,qwen3:*``), or for a client
  without a key ``ANONYMOUS_MODELS``; empty: every model. They apply to the target; another
  model is ``403 model_not_allowed`` (``ModelNotAllowed``), which counts against no quota
  (``app.access.admission``). The model lists show a client only what it may use, its aliases
  beside the real names (``listed``).

A name without a tag is Ollama's ``:latest`` (``model_key``), here as on the hosts; a pattern
matches a name as written or so completed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from starlette.types import Scope

from app.access.identity import identity
from app.errors import ModelNotAllowed
from app.settings import Settings
from app.upstream.hosts import model_key

_ASKED = "bib.model_asked"  # the alias a request asked for, which its answer says


@dataclass(frozen=True, slots=True)
class Models:
    aliases: Mapping[str, str]  # model_key(alias) -> target
    patterns: tuple[str, ...]  # empty: every model

    def target(self, name: str) -> str:
        """What serves ``name``: its alias's target, else itself."""
        return self.aliases.get(model_key(name), name)

    def allows(self, name: str) -> bool:
        return not self.patterns or any(
            fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(model_key(name), model_key(p))
            for p in self.patterns
        )

    def checked(self, name: str) -> str:
        """The model that serves ``name``; raises ``ModelNotAllowed`` when the client may not
        use it."""
        target = self.target(name)
        if not self.allows(target):
            named = repr(name) if target == name else f"{name!r} ({target})"
            raise ModelNotAllowed(f"The model {named} is not allowed for this client; "
                                  "GET /v1/models lists the models it may use.")  # fmt: skip
        return target

    def listed(self, names: Iterable[str]) -> list[tuple[str, str | None]]:
        """Of the models ``names`` (the hosts' list), those the client may use, then the aliases
        whose target is one of them: ``(name, None)`` and ``(alias, target)``."""
        allowed = [name for name in names if self.allows(name)]
        served = {model_key(name): name for name in allowed}
        aliases = [(alias, served[model_key(target)]) for alias, target in self.aliases.items()
                   if model_key(target) in served]  # fmt: skip
        # a model an alias shadows is asked for in vain: the alias is listed instead
        return [(name, None) for name in allowed if model_key(name) not in self.aliases] + [
            (alias.removesuffix(":latest"), target) for alias, target in aliases
        ]


def entries(scope: Scope, listed: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Of the hosts' model entries (Ollama's, as ``/api/tags`` and ``/api/ps`` list them),
    those the request's client may use, then its aliases of them, each as its target's entry
    under the alias's name (what Ollama's own ``ollama cp`` would list)."""
    by_name = {str(entry.get("name") or entry.get("model")): entry for entry in listed}
    return [by_name[name] if target is None else {**by_name[target], "name": name, "model": name}
            for name, target in models(scope).listed(by_name)]  # fmt: skip


def everyone(settings: Settings) -> Models:
    """The service's own view: ``MODEL_ALIASES``, every model allowed."""
    return _everyone(settings, ())


def models(scope: Scope) -> Models:
    """The view of the request's client: its key's, else the anonymous one."""
    settings: Settings = scope["state"]["settings"]
    key = identity(scope).key
    if key is None:
        return _everyone(settings, settings.anonymous_models)
    if not key.aliases:
        return _everyone(settings, key.models)
    aliases = {**everyone(settings).aliases, **_keyed(key.aliases.items())}
    return Models(aliases, key.models)


@lru_cache(maxsize=64)
def _everyone(settings: Settings, patterns: tuple[str, ...]) -> Models:
    return Models(_keyed(settings.model_aliases), patterns)


def _keyed(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {model_key(alias): target for alias, target in pairs}


def resolved(scope: Scope, data: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data`` (a body or a query) asking for the model that serves what it names (or
    ``DEFAULT_MODEL``), and noting what it named for the answer (``shown``); raises
    ``ModelNotAllowed``. A ``model`` that is not a string is left for the surface's parse to
    refuse."""
    asked = data.get("model")
    if asked is None:
        asked = scope["state"]["settings"].default_model
    elif not isinstance(asked, str):
        return data
    target = models(scope).checked(asked)
    if target == asked:
        return data
    scope[_ASKED] = asked
    return {**data, "model": target}


def shown(scope: Scope, model: str) -> str:
    """The name an answer gives ``model``: the alias the client asked for, if it did."""
    asked = scope.get(_ASKED)
    return model if asked is None else str(asked)
