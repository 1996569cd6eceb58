"""Settings as ``python -m app`` reads them at startup: a bad value stops it with one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.system


def test_bad_value_stops_startup_with_one_line() -> None:
    """`python -m app` prints one line naming the variable and exits non-zero."""
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        env={"RATE_LIMIT_MAX": "abc", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr == "error: RATE_LIMIT_MAX='abc' is invalid: expected an integer >= 0\n"
