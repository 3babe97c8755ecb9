"""Every refusal of the token endpoint, with its exact RFC 6749 / RFC 8707 code and status.

And the malformed requests a fuzzer or a confused client sends: never a 500, always an
OAuth error a client can act on.
"""

import base64

import httpx
import pytest

from tests.conftest import TenantSetup
from tests.integration.helpers import (
    ASSERTION_TYPE,
    FORM,
    GRANT,
    KeyPair,
    assert_oauth_error,
    assertion_claims,
    assertion_form,
    http,
    make_tenant,
    post,
    token_request,
)
from tests.support.server import RunningServer


@pytest.fixture(scope="module")
def shared(server: RunningServer) -> TenantSetup:
    """One tenant for the tests that only read: a fresh one per test costs four CLI runs."""
    return make_tenant(server)


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


# client authentication -> 401 invalid_client ----------------------------------------------
def test_unknown_client_basic(shared: TenantSetup) -> None:
    response = token_request(
        shared.server, {"client_id": "agt_doesnotexist", "client_secret": "vk_cs_x"}, shared.crm
    )
    assert_oauth_error(response, 401, "invalid_client", basic_challenge=True)


def test_wrong_secret_basic(shared: TenantSetup) -> None:
    response = token_request(
        shared.server, shared.agent, shared.crm, secret=shared.agent["client_secret"] + "x"
    )
    assert_oauth_error(response, 401, "invalid_client", basic_challenge=True)


def test_secret_of_the_right_shape_but_wrong_value(tenant: TenantSetup) -> None:
    other = tenant.new_agent("other-bot", "deals:read")
    response = token_request(tenant.server, tenant.agent, secret=other["client_secret"])
    assert_oauth_error(response, 401, "invalid_client", basic_challenge=True)


@pytest.mark.parametrize(
    "form",
    [
        {"client_id": "agt_doesnotexist", "client_secret": "vk_cs_x"},
        {"client_id": "{agent}", "client_secret": "wrong"},
        {"client_id": "{agent}", "client_secret": ""},
        {"client_secret": "{secret}"},  # a secret without a client id
    ],
    ids=["unknown", "wrong", "empty", "no-client-id"],
)
def test_client_secret_post_refusals(shared: TenantSetup, form: dict[str, str]) -> None:
    data = {
        k: v.format(agent=shared.agent["id"], secret=shared.agent["client_secret"])
        for k, v in form.items()
    }
    response = post(shared.server, "/oauth/token", {"grant_type": GRANT, **data})
    assert_oauth_error(response, 401, "invalid_client")


def test_no_client_authentication(shared: TenantSetup) -> None:
    response = post(shared.server, "/oauth/token", {"grant_type": GRANT})
    assert_oauth_error(response, 401, "invalid_client")
    response = post(
        shared.server, "/oauth/token", {"grant_type": GRANT, "client_id": shared.agent["id"]}
    )
    assert_oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize(
    "value",
    ["Basic !!!notbase64", "Basic " + base64.b64encode(b"no-colon").decode(), "Basic"],
)
def test_malformed_basic_header(shared: TenantSetup, value: str) -> None:
    response = post(
        shared.server, "/oauth/token", {"grant_type": GRANT}, headers={"Authorization": value}
    )
    assert_oauth_error(response, 401, "invalid_client")
    if value.strip() != "Basic":
        assert response.headers["www-authenticate"].lower().startswith("basic")


def test_service_client_cannot_use_client_credentials(shared: TenantSetup) -> None:
    service = shared.introspector()
    response = token_request(shared.server, service, shared.crm)
    assert_oauth_error(response, 400, "unauthorized_client")


# two client authentication methods, or conflicting client ids -> invalid_request --------
def test_basic_and_client_secret_post_at_once(shared: TenantSetup) -> None:
    agent = shared.agent
    response = post(
        shared.server,
        "/oauth/token",
        {"grant_type": GRANT, "client_id": agent["id"], "client_secret": agent["client_secret"]},
        auth=(agent["id"], agent["client_secret"]),
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_basic_and_client_assertion_at_once(shared: TenantSetup) -> None:
    agent = shared.agent
    assertion = KeyPair.generate().sign(assertion_claims(shared.server, agent["id"]))
    response = post(
        shared.server,
        "/oauth/token",
        {
            "grant_type": GRANT,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        },
        auth=(agent["id"], agent["client_secret"]),
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_client_secret_post_and_client_assertion_at_once(shared: TenantSetup) -> None:
    agent = shared.agent
    assertion = KeyPair.generate().sign(assertion_claims(shared.server, agent["id"]))
    response = post(
        shared.server,
        "/oauth/token",
        {
            "grant_type": GRANT,
            "client_id": agent["id"],
            "client_secret": agent["client_secret"],
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        },
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_body_client_id_differs_from_basic_client_id(tenant: TenantSetup) -> None:
    other = tenant.new_agent("other-bot", "deals:read")
    agent = tenant.agent
    response = post(
        tenant.server,
        "/oauth/token",
        {"grant_type": GRANT, "client_id": other["id"]},
        auth=(agent["id"], agent["client_secret"]),
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_body_client_id_equal_to_basic_client_id_is_fine(shared: TenantSetup) -> None:
    agent = shared.agent
    response = post(
        shared.server,
        "/oauth/token",
        {"grant_type": GRANT, "client_id": agent["id"], "resource": shared.crm},
        auth=(agent["id"], agent["client_secret"]),
    )
    assert response.status_code == 200, response.text


# grants ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "grant_type",
    [
        "password",
        "implicit",
        "token",
        "id_token",
        "client_credentials ",
        "CLIENT_CREDENTIALS",
        "urn:ietf:params:oauth:grant-type:unknown",
    ],
)
def test_unsupported_grant_types(shared: TenantSetup, grant_type: str) -> None:
    agent = shared.agent
    response = post(
        shared.server,
        "/oauth/token",
        {"grant_type": grant_type, "username": "sam@acme.example", "password": "hunter2"},
        auth=(agent["id"], agent["client_secret"]),
    )
    assert_oauth_error(response, 400, "unsupported_grant_type")


@pytest.mark.parametrize("form", [{}, {"grant_type": ""}, {"resource": "https://x.example"}])
def test_missing_grant_type(shared: TenantSetup, form: dict[str, str]) -> None:
    agent = shared.agent
    response = post(shared.server, "/oauth/token", form, auth=(agent["id"], agent["client_secret"]))
    assert_oauth_error(response, 400, "invalid_request")


# scopes and resources ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "scope",
    ["deals:write", "deals:admin", "deals:read deals:write", "mail:read", "openid", "*"],
)
def test_scope_not_allowed(shared: TenantSetup, scope: str) -> None:
    response = token_request(shared.server, shared.agent, shared.crm, scope=scope)
    assert_oauth_error(response, 400, "invalid_scope")


def test_scope_not_allowed_without_resource(shared: TenantSetup) -> None:
    response = token_request(shared.server, shared.agent, scope="deals:write")
    assert_oauth_error(response, 400, "invalid_scope")


@pytest.mark.parametrize("scope", ["", " ", "  "])
def test_empty_scope_never_yields_a_scopeless_token(shared: TenantSetup, scope: str) -> None:
    """`scope` is one or more scope-tokens (RFC 6749 §3.3): an empty value is either refused
    or treated as absent, never granted as a token with no scope at all."""
    for resource in (shared.crm, None):
        response = token_request(shared.server, shared.agent, resource, scope=scope)
        if response.status_code == 200:
            assert response.json()["scope"] == "deals:read", response.json()
        else:
            assert_oauth_error(response, 400, "invalid_scope")


@pytest.mark.parametrize(
    "resource",
    [
        "https://unknown.example",
        "{crm}/",
        "{crm}/deals",
        "{crm}#frag",
        "crm",
        "",
        "HTTPS://CRM-UPPER.example",
    ],
)
def test_unknown_or_invalid_resource(shared: TenantSetup, resource: str) -> None:
    response = token_request(shared.server, shared.agent, resource.format(crm=shared.crm))
    assert_oauth_error(response, 400, "invalid_target")


def test_two_resources(tenant: TenantSetup) -> None:
    tenant.server.cli(
        "resources", "create", "https://mail.example", "--tenant", tenant.name, "--scope", "x:y"
    )
    agent = tenant.agent
    for resources in ([tenant.crm, "https://mail.example"], [tenant.crm, tenant.crm]):
        response = post(
            tenant.server,
            "/oauth/token",
            [("grant_type", GRANT), *[("resource", r) for r in resources]],
            auth=(agent["id"], agent["client_secret"]),
        )
        assert_oauth_error(response, 400, "invalid_target")


# the shape of the request -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["grant_type", "scope", "client_id", "client_secret"])
def test_duplicate_parameter(shared: TenantSetup, name: str) -> None:
    agent = shared.agent
    values = {
        "grant_type": GRANT,
        "scope": "deals:read",
        "client_id": agent["id"],
        "client_secret": agent["client_secret"],
    }
    pairs = [("resource", shared.crm), *values.items(), (name, values[name])]
    response = post(shared.server, "/oauth/token", pairs)
    assert_oauth_error(response, 400, "invalid_request")


def test_parameters_in_the_query_string(shared: TenantSetup) -> None:
    agent = shared.agent
    server = shared.server
    response = http.post(
        server.base_url + "/oauth/token",
        params={"grant_type": GRANT, "resource": shared.crm},
        auth=(agent["id"], agent["client_secret"]),
    )
    assert_oauth_error(response, 400, "invalid_request")
    # a complete body plus anything in the query string is refused too
    response = http.post(
        server.base_url + "/oauth/token",
        params={"scope": "deals:admin"},
        data={"grant_type": GRANT, "resource": shared.crm},
        auth=(agent["id"], agent["client_secret"]),
    )
    assert_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", '{"grant_type": "client_credentials"}'),
        ("text/plain", "grant_type=client_credentials"),
        ("multipart/form-data; boundary=x", "--x\r\n\r\n--x--"),
        (None, "grant_type=client_credentials"),
    ],
)
def test_wrong_content_type(shared: TenantSetup, content_type: str | None, body: str) -> None:
    agent = shared.agent
    headers = {"Content-Type": content_type} if content_type else {}
    response = http.post(
        shared.server.base_url + "/oauth/token",
        content=body.encode(),
        headers=headers,
        auth=(agent["id"], agent["client_secret"]),
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_form_content_type_with_charset_is_accepted(shared: TenantSetup) -> None:
    agent = shared.agent
    response = http.post(
        shared.server.base_url + "/oauth/token",
        content=f"grant_type={GRANT}&resource={shared.crm}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
        auth=(agent["id"], agent["client_secret"]),
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/introspect", "/oauth/revoke"])
def test_get_is_not_allowed(shared: TenantSetup, path: str) -> None:
    response = http.get(shared.server.base_url + path, params={"grant_type": GRANT})
    assert response.status_code == 405
    assert response.json()["error"] == "invalid_request"


def test_body_too_large(shared: TenantSetup) -> None:
    agent = shared.agent
    response = post(
        shared.server,
        "/oauth/token",
        {"grant_type": GRANT, "padding": "x" * 70_000},
        auth=(agent["id"], agent["client_secret"]),
    )
    assert_oauth_error(response, 400, "invalid_request")


MALFORMED_BODIES: list[bytes] = [
    b"",
    b"&&&",
    b"=",
    b"grant_type",
    b"%",
    b"%zz=%zz",
    b"grant_type=client_credentials&&resource=x",
    b"\xff\xfe\x00\x01",
    b"grant_type=\xc3\x28",
    b"grant_type=client_credentials%00",
    b"grant_type=client_credentials&client_id=%00",
    b"grant_type=client_credentials&client_id=" + b"a" * 5000 + b"&client_secret=x",
    b"grant_type=client_credentials&client_id=%C3%A9t%C3%A9&client_secret=%F0%9F%94%91",
    b"grant_type=client_credentials&client_id=%ED%A0%80&client_secret=x",
    b"grant_type=client_credentials&scope=%00&client_id=x&client_secret=y",
    b"token=%00&client_id=x&client_secret=y",
    b"token=" + b"A" * 60000 + b"&client_id=x&client_secret=y",
    b"&".join(b"p%d=v" % i for i in range(150)),
    b"grant_type=client_credentials&client_assertion_type=" + ASSERTION_TYPE.encode(),
    b"grant_type=client_credentials&client_assertion_type=x&client_assertion=y",
]
CLIENT_ERRORS = {"invalid_request", "invalid_client", "unsupported_grant_type"}


def _not_a_client_error(response: httpx.Response) -> str | None:
    """Why this is not a clean OAuth client error, or None."""
    if not 400 <= response.status_code < 500:
        return f"{response.status_code} {response.text[:80]}"
    if response.json().get("error") not in CLIENT_ERRORS:
        return response.text[:80]
    if response.headers.get("cache-control") != "no-store":
        return "no Cache-Control: no-store"
    return None


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/introspect", "/oauth/revoke"])
def test_malformed_body_never_500(shared: TenantSetup, path: str) -> None:
    failures = {}
    for body in MALFORMED_BODIES:
        problem = _not_a_client_error(post(shared.server, path, content=body, headers=FORM))
        if problem:
            failures[body[:60]] = problem
    assert failures == {}


ASSERTIONS = [
    "",
    "x",
    "a.b.c",
    "...",
    "e30.e30.",  # {}.{}
    "W10.W10.",  # [].[]
    "bnVsbA.bnVsbA.",  # null.null
    "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOjF9.AAAA",  # iss is a number
    "eyJhbGciOlsiRVMyNTYiXX0.eyJpc3MiOiJhZ3RfeCJ9.AAAA",  # alg is a list
    "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJhZ3RfeCJ9." + "A" * 40000,  # huge signature
    "_w.__.__",  # not JSON, not UTF-8
]


@pytest.mark.parametrize("with_client_id", [False, True])
def test_malformed_client_assertion_is_invalid_client(
    shared: TenantSetup, with_client_id: bool
) -> None:
    failures = {}
    for assertion in ASSERTIONS:
        form = assertion_form(assertion, shared.agent["id"] if with_client_id else None)
        response = post(shared.server, "/oauth/token", form)
        if response.status_code != 401 or response.json().get("error") != "invalid_client":
            failures[assertion[:60]] = f"{response.status_code} {response.text[:80]}"
    assert failures == {}


@pytest.mark.parametrize(
    "client_id",
    ["é", "a" * 300, "agt_x\ny", "' OR 1=1 --", "%", "agt_" + "x" * 60],
    ids=["non-ascii", "long", "newline", "sql", "percent", "over-column-width"],
)
def test_odd_client_ids_in_basic_are_invalid_client(shared: TenantSetup, client_id: str) -> None:
    response = post(
        shared.server,
        "/oauth/token",
        {"grant_type": GRANT},
        headers=basic(client_id, "vk_cs_whatever"),
    )
    assert_oauth_error(response, 401, "invalid_client", basic_challenge=True)


# A NUL character cannot be stored or compared in a PostgreSQL text column: asyncpg raises
# CharacterNotInRepertoireError, which must not surface as a 500 (found by these tests).
NUL_ID = "agt_\x00"


def test_nul_in_basic_client_id_is_invalid_client(shared: TenantSetup) -> None:
    response = post(
        shared.server, "/oauth/token", {"grant_type": GRANT}, headers=basic(NUL_ID, "vk_cs_x")
    )
    assert_oauth_error(response, 401, "invalid_client", basic_challenge=True)


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/introspect", "/oauth/revoke"])
def test_nul_in_posted_client_id_is_invalid_client(shared: TenantSetup, path: str) -> None:
    form = {"grant_type": GRANT, "token": "x", "client_id": NUL_ID, "client_secret": "vk_cs_x"}
    assert_oauth_error(post(shared.server, path, form), 401, "invalid_client")


def test_nul_in_assertion_issuer_is_invalid_client(shared: TenantSetup) -> None:
    claims = assertion_claims(shared.server, NUL_ID)
    form = assertion_form(KeyPair.generate().sign(claims))
    assert_oauth_error(post(shared.server, "/oauth/token", form), 401, "invalid_client")


def test_server_still_healthy_after_the_abuse(shared: TenantSetup) -> None:
    assert http.get(shared.server.base_url + "/healthz").status_code == 200
    assert token_request(shared.server, shared.agent, shared.crm).status_code == 200
