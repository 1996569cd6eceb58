"""docs/reliability.md names the tests that keep each line true: they must exist, each by its
path under tests/ (``unit/...`` or ``system/...``)."""

from __future__ import annotations

import fnmatch
import re

from tests.support.settings import ROOT


def test_every_test_the_document_names_exists() -> None:
    text = (ROOT / "docs/reliability.md").read_text()
    references = re.findall(r"`((?:[\w-]+/)*test_\w+\.py)(?:::([\w*]+))?`", text)
    assert len(references) > 20
    for filename, name in references:
        assert filename.startswith(("unit/", "system/")), f"{filename}: not a path in tests/"
        source = (ROOT / "tests" / filename).read_text()
        if name:
            defined = re.findall(r"^(?:async )?def (test_\w+)", source, re.M)
            assert fnmatch.filter(defined, name), f"{filename}::{name} is not a test"
