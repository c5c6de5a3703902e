"""Property-based requests from the adapter's own OpenAPI schema: never a 5xx, every error in the OpenAI envelope.

Uses schemathesis' strategies with hypothesis directly (its pytest plugin does not support pytest 9).
The draws stay random, and every case a draw ever found is replayed first as an explicit example, so a
defect once found fails every run, not one run in many.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings

pytestmark = pytest.mark.e2e

# (path, JSON body) of every case the fuzzer (or a reviewer replaying its kind of input) has found.
FOUND: dict[str, list[object]] = {
    "/v1/embeddings": [
        {"input": [9223372036854775808]},  # 2^63 overflowed int64 on the way to Triton: a 500
        {"input": [1, 2, 3, 4, 5, 2**64]},  # orjson reads 2^64 as a float: blamed input[0]
        {"input": [[1, 2], [-1]]},
        {"input": [1.5]},
        {"input": [[]]},
        {"input": [True, False]},
        {"input": "x", "dimensions": -1},
        {"input": "x", "dimensions": 2**64},
        {"input": "x", "model": "x" * 10_000},
        {"input": "\u0000"},
    ],
    "/tokenize": [{"input": [""]}, {"input": "\udcff"}],
}


def test_no_server_errors_and_errors_in_the_envelope(minilm_stack) -> None:
    schema = schemathesis.openapi.from_url(f"{minilm_stack.adapter_url}/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        found = [operation.Case(body=b, media_type="application/json") for b in FOUND.get(operation.path, [])]

        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case) -> None:
            response = case.call(timeout=60)
            assert response.status_code < 500, (case.path, case.body, response.text)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"} and error["message"], response.text

        for case in found:
            check = example(case=case)(check)
        check()
        checked.append(operation.path)
    assert {"/v1/embeddings", "/tokenize", "/v1/models", "/health/ready"} <= set(checked)
