"""Property-based requests from the adapter's own OpenAPI schema: never a 5xx, every error in the OpenAI envelope.

Uses schemathesis' strategies with hypothesis directly (its pytest plugin does not support pytest 9).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

pytestmark = pytest.mark.e2e


def test_no_server_errors_and_errors_in_the_envelope(minilm_stack) -> None:
    schema = schemathesis.openapi.from_url(f"{minilm_stack.adapter_url}/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            response = case.call(timeout=60)
            assert response.status_code < 500, (case.path, case.body, response.text)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"} and error["message"], response.text

        check()
        checked.append(operation.path)
    assert {"/v1/embeddings", "/tokenize", "/v1/models", "/health/ready"} <= set(checked)
