"""The HTTP API fuzzed from its own OpenAPI document (schemathesis), against the real app:
whatever the input, no 5xx, no stack trace, and answers that match the document.

schemathesis' pytest plugin does not work with pytest 9, so its per-operation hypothesis
strategies are driven directly."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from harness.servers import Server

pytestmark = pytest.mark.system


def test_no_input_breaks_the_api(service: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]  # an Err would raise here, as it should
    assert len(operations) == 35  # every method of every documented path
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def survives(case: Any) -> None:
            response = case.call(timeout=20)
            assert response.status_code < 500, f"{case.method} {case.path}: {response.text[:300]}"
            assert "Traceback" not in response.text
            # Its generator counts bodies with neither prompt nor messages as schema-valid,
            # which jsonschema does not (see tests/unit/api/test_docs.py): that check alone is
            # left out.
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

        survives()
