"""Fuzz every operation of the OpenAPI document: bad input never gets a 500.

Drives schemathesis' strategies with Hypothesis directly (its pytest plugin does not yet
run under pytest 9).
"""

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from tests.integration.helpers import make_tenant
from tests.support.server import RunningServer


def test_no_operation_answers_a_server_error(server: RunningServer) -> None:
    schema = schemathesis.openapi.from_url(server.base_url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/oauth/token",
        "/oauth/introspect",
        "/oauth/revoke",
        "/oauth/authorize",
        "/v1/gateway/{provider}/{path}",
        "/v1/connections/start",
        "/v1/connections/callback",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        fuzz()


def test_authorize_with_a_real_client_never_errors_out(server: RunningServer) -> None:
    """Past the client check, where random client ids never get: any other parameter is
    refused cleanly (a redirect with an error, or a page), never a 500."""
    tenant = make_tenant(server)
    redirect = "http://127.0.0.1:9/cb"
    agent = tenant.new_agent("fuzzed", "deals:read", extra=("--redirect-uri", redirect))
    names = st.sampled_from(["response_type", "scope", "state", "resource", "code_challenge",
                             "code_challenge_method", "authorization_details", "prompt",
                             "dpop_jkt", "redirect_uri"])  # fmt: skip
    values = st.text(st.characters(codec="utf-8"), max_size=80)

    @given(extra=st.dictionaries(names, values, max_size=6))
    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    def fuzz(extra: dict[str, str]) -> None:
        params = {"client_id": agent["client_id"], "redirect_uri": redirect, **extra}
        response = httpx.get(server.base_url + "/oauth/authorize", params=params)
        assert response.status_code in (200, 303, 400), response.text[:300]
        if response.status_code == 303:
            assert response.headers["location"].startswith(redirect + "?")

    fuzz()
