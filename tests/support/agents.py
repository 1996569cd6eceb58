"""The real coding agents, Claude Code and Codex, as ``./scripts/test`` installs them from npm
(pinned there, in ``npm_packages``), run headless: no terminal, no input, an environment of
their own."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.settings import ROOT

NPM_BIN = ROOT / ".run/npm/node_modules/.bin"


def pinned(package: str) -> str:
    """The version of ``package`` that ``./scripts/test`` installs."""
    packages = re.search(r'^npm_packages="([^"]*)"', (ROOT / "scripts/test").read_text(), re.M)
    assert packages, "scripts/test pins no npm packages"
    for spec in packages[1].split():
        name, _, version = spec.rpartition("@")
        if name == package:
            return version
    raise AssertionError(f"scripts/test does not pin {package}")


def installed(command: str, package: str) -> Path:
    """The CLI ``command`` of ``package``, at its pinned version; a test fails here, loudly,
    on a machine without it (``./scripts/test`` installs it)."""
    path = NPM_BIN / command
    assert path.exists(), (f"{command} ({package}) is not installed in {NPM_BIN}: "
                           "./scripts/test installs it from npm")  # fmt: skip
    version = run([str(path), "--version"], env={}, cwd=ROOT).stdout
    assert pinned(package) in version, f"{command} --version says {version!r}"
    return path


def run(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Runs a CLI headless, with ``env`` and the ``PATH`` alone as its environment (nothing
    of the developer's own, such as an API key, leaks in)."""
    return subprocess.run(argv, env={"PATH": os.environ["PATH"], "TERM": "dumb", **env},
                          cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
