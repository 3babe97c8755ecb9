"""Fuzz every operation of the OpenAPI document: bad input never gets a 500.

Drives schemathesis' strategies with Hypothesis directly (its pytest plugin does not yet
run under pytest 9).
"""

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.support.server import RunningServer


def test_no_operation_answers_a_server_error(server: RunningServer) -> None:
    schema = schemathesis.openapi.from_url(server.base_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/oauth/token", "/oauth/introspect", "/oauth/revoke"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        fuzz()
