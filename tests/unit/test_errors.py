"""The error tree: each error rebuilt from the code another worker published."""

from __future__ import annotations

import pytest

from app import errors
from app.errors import ServiceError, UpstreamError, UpstreamFailed, error_for


def _all_errors() -> list[type[ServiceError]]:
    found, pending = [], [ServiceError]
    while pending:
        kind = pending.pop()
        found.append(kind)
        pending.extend(kind.__subclasses__())
    return found


@pytest.mark.parametrize("kind", [pytest.param(k, id=k.__name__) for k in _all_errors()])
def test_every_error_comes_back_from_its_code(kind: type[ServiceError]) -> None:
    rebuilt = error_for(kind.code, "said elsewhere")
    assert rebuilt.code == kind.code
    assert rebuilt.detail == "said elsewhere"
    assert rebuilt.status_code == kind.status_code


def test_a_code_names_one_class_the_one_that_defines_it() -> None:
    """``UpstreamFailed`` (worth another host) shares ``upstream_error`` with its parent."""
    assert type(error_for(UpstreamFailed.code, "x")) is UpstreamError
    codes = [k.code for k in _all_errors() if "code" in vars(k)]
    assert len(codes) == len(set(codes)) == len(errors._BY_CODE)


def test_an_unknown_code_is_an_upstream_error() -> None:
    assert type(error_for("from_a_newer_version", "x")) is UpstreamError
