"""Every refusal of the token endpoint, with its exact RFC 6749 / RFC 8707 code and status.

And the malformed requests a fuzzer or a confused client sends: never a 500, always an
OAuth error a client can act on.
"""

import base64
from typing import Any

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
    post,
    token_request,
)


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


# client authentication -> 401 invalid_client ----------------------------------------------
def test_unknown_client_basic(tenant: TenantSetup) -> None:
    response = token_request(
        tenant.server, {"client_id": "agt_doesnotexist", "client_secret": "vk_cs_x"}, tenant.crm
    )
    assert_oauth_error(response, 401, "invalid_client", basic_challenge=True)


def test_wrong_secret_basic(tenant: TenantSetup) -> None:
    response = token_request(
        tenant.server, tenant.agent, tenant.crm, secret=tenant.agent["client_secret"] + "x"
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
def test_client_secret_post_refusals(tenant: TenantSetup, form: dict[str, str]) -> None:
    data = {
        k: v.format(agent=tenant.agent["id"], secret=tenant.agent["client_secret"])
        for k, v in form.items()
    }
    response = post(tenant.server, "/oauth/token", {"grant_type": GRANT, **data})
    assert_oauth_error(response, 401, "invalid_client")


def test_no_client_authentication(tenant: TenantSetup) -> None:
    response = post(tenant.server, "/oauth/token", {"grant_type": GRANT})
    assert_oauth_error(response, 401, "invalid_client")
    response = post(
        tenant.server, "/oauth/token", {"grant_type": GRANT, "client_id": tenant.agent["id"]}
    )
    assert_oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize(
    "value",
    ["Basic !!!notbase64", "Basic " + base64.b64encode(b"no-colon").decode(), "Basic ", "Basic"],
)
def test_malformed_basic_header(tenant: TenantSetup, value: str) -> None:
    response = post(
        tenant.server, "/oauth/token", {"grant_type": GRANT}, headers={"Authorization": value}
    )
    assert_oauth_error(response, 401, "invalid_client")
    if value.strip() != "Basic":
        assert response.headers["www-authenticate"].lower().startswith("basic")


def test_service_client_cannot_use_client_credentials(tenant: TenantSetup) -> None:
    service = tenant.introspector()
    response = token_request(tenant.server, service, tenant.crm)
    assert_oauth_error(response, 400, "unauthorized_client")


# two client authentication methods, or conflicting client ids -> invalid_request --------
def test_basic_and_client_secret_post_at_once(tenant: TenantSetup) -> None:
    agent = tenant.agent
    response = post(
        tenant.server,
        "/oauth/token",
        {"grant_type": GRANT, "client_id": agent["id"], "client_secret": agent["client_secret"]},
        auth=(agent["id"], agent["client_secret"]),
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_basic_and_client_assertion_at_once(tenant: TenantSetup) -> None:
    agent = tenant.agent
    assertion = KeyPair.generate().sign(assertion_claims(tenant.server, agent["id"]))
    response = post(
        tenant.server,
        "/oauth/token",
        {
            "grant_type": GRANT,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        },
        auth=(agent["id"], agent["client_secret"]),
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_client_secret_post_and_client_assertion_at_once(tenant: TenantSetup) -> None:
    agent = tenant.agent
    assertion = KeyPair.generate().sign(assertion_claims(tenant.server, agent["id"]))
    response = post(
        tenant.server,
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


def test_body_client_id_equal_to_basic_client_id_is_fine(tenant: TenantSetup) -> None:
    agent = tenant.agent
    response = post(
        tenant.server,
        "/oauth/token",
        {"grant_type": GRANT, "client_id": agent["id"], "resource": tenant.crm},
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
def test_unsupported_grant_types(tenant: TenantSetup, grant_type: str) -> None:
    agent = tenant.agent
    response = post(
        tenant.server,
        "/oauth/token",
        {"grant_type": grant_type, "username": "sam@acme.example", "password": "hunter2"},
        auth=(agent["id"], agent["client_secret"]),
    )
    assert_oauth_error(response, 400, "unsupported_grant_type")


@pytest.mark.parametrize("form", [{}, {"grant_type": ""}, {"resource": "https://x.example"}])
def test_missing_grant_type(tenant: TenantSetup, form: dict[str, str]) -> None:
    agent = tenant.agent
    response = post(tenant.server, "/oauth/token", form, auth=(agent["id"], agent["client_secret"]))
    assert_oauth_error(response, 400, "invalid_request")


# scopes and resources ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "scope",
    ["deals:write", "deals:admin", "deals:read deals:write", "mail:read", "openid", "*"],
)
def test_scope_not_allowed(tenant: TenantSetup, scope: str) -> None:
    response = token_request(tenant.server, tenant.agent, tenant.crm, scope=scope)
    assert_oauth_error(response, 400, "invalid_scope")


def test_scope_not_allowed_without_resource(tenant: TenantSetup) -> None:
    response = token_request(tenant.server, tenant.agent, scope="deals:write")
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
def test_unknown_or_invalid_resource(tenant: TenantSetup, resource: str) -> None:
    response = token_request(tenant.server, tenant.agent, resource.format(crm=tenant.crm))
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
def test_duplicate_parameter(tenant: TenantSetup, name: str) -> None:
    agent = tenant.agent
    values = {
        "grant_type": GRANT,
        "scope": "deals:read",
        "client_id": agent["id"],
        "client_secret": agent["client_secret"],
    }
    pairs = [("resource", tenant.crm), *values.items(), (name, values[name])]
    response = post(tenant.server, "/oauth/token", pairs)
    assert_oauth_error(response, 400, "invalid_request")


def test_parameters_in_the_query_string(tenant: TenantSetup) -> None:
    agent = tenant.agent
    server = tenant.server
    response = httpx.post(
        server.base_url + "/oauth/token",
        params={"grant_type": GRANT, "resource": tenant.crm},
        auth=(agent["id"], agent["client_secret"]),
    )
    assert_oauth_error(response, 400, "invalid_request")
    # a complete body plus anything in the query string is refused too
    response = httpx.post(
        server.base_url + "/oauth/token",
        params={"scope": "deals:admin"},
        data={"grant_type": GRANT, "resource": tenant.crm},
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
def test_wrong_content_type(tenant: TenantSetup, content_type: str | None, body: str) -> None:
    agent = tenant.agent
    headers = {"Content-Type": content_type} if content_type else {}
    response = httpx.post(
        tenant.server.base_url + "/oauth/token",
        content=body.encode(),
        headers=headers,
        auth=(agent["id"], agent["client_secret"]),
    )
    assert_oauth_error(response, 400, "invalid_request")


def test_form_content_type_with_charset_is_accepted(tenant: TenantSetup) -> None:
    agent = tenant.agent
    response = httpx.post(
        tenant.server.base_url + "/oauth/token",
        content=f"grant_type={GRANT}&resource={tenant.crm}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
        auth=(agent["id"], agent["client_secret"]),
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/introspect", "/oauth/revoke"])
def test_get_is_not_allowed(tenant: TenantSetup, path: str) -> None:
    response = httpx.get(tenant.server.base_url + path, params={"grant_type": GRANT})
    assert response.status_code == 405
    assert response.json()["error"] == "invalid_request"


def test_body_too_large(tenant: TenantSetup) -> None:
    agent = tenant.agent
    response = post(
        tenant.server,
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
    b"grant_type=client_credentials&client_id=agt_%00%01&client_secret=x",
    b"grant_type=client_credentials&client_id=" + b"a" * 5000 + b"&client_secret=x",
    b"grant_type=client_credentials&client_id=%C3%A9t%C3%A9&client_secret=%F0%9F%94%91",
    b"grant_type=client_credentials&client_id=%ED%A0%80&client_secret=x",
    b"grant_type=client_credentials&scope=%00&client_id=x&client_secret=y",
    b"&".join(b"p%d=v" % i for i in range(150)),
    b"grant_type=client_credentials&client_assertion_type=" + ASSERTION_TYPE.encode(),
    b"grant_type=client_credentials&client_assertion_type=x&client_assertion=y",
]


def _assert_client_error(response: httpx.Response) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    assert body["error"] in {"invalid_request", "invalid_client", "unsupported_grant_type"}
    return dict(body)


@pytest.mark.parametrize("body", MALFORMED_BODIES)
@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/introspect", "/oauth/revoke"])
def test_malformed_body_never_500(tenant: TenantSetup, path: str, body: bytes) -> None:
    response = post(tenant.server, path, content=body, headers=FORM)
    _assert_client_error(response)


ASSERTIONS = [
    "",
    "x",
    "a.b.c",
    "...",
    "e30.e30.",  # {}.{}
    "W10.W10.",  # [].[]
    "bnVsbA.bnVsbA.",  # null.null
    "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOjF9.AAAA",  # iss is a number
    "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJcdTAwMDAifQ.AAAA",  # iss is NUL
    "eyJhbGciOlsiRVMyNTYiXX0.eyJpc3MiOiJhZ3RfeCJ9.AAAA",  # alg is a list
    "_w.__.__",  # not JSON, not UTF-8
]


@pytest.mark.parametrize("assertion", ASSERTIONS)
@pytest.mark.parametrize("with_client_id", [False, True])
def test_malformed_client_assertion_never_500(
    tenant: TenantSetup, assertion: str, with_client_id: bool
) -> None:
    form = {
        "grant_type": GRANT,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    if with_client_id:
        form["client_id"] = tenant.agent["id"]
    response = post(tenant.server, "/oauth/token", form)
    assert_oauth_error(response, 401, "invalid_client")


@pytest.mark.parametrize(
    "client_id",
    ["agt_\x00", "\x00", "é", "a" * 300, "agt_x\ny", "' OR 1=1 --"],
    ids=["nul-prefixed", "nul", "non-ascii", "long", "newline", "sql"],
)
def test_odd_client_ids_in_basic_are_invalid_client(tenant: TenantSetup, client_id: str) -> None:
    response = post(
        tenant.server,
        "/oauth/token",
        {"grant_type": GRANT},
        headers=basic(client_id, "vk_cs_whatever"),
    )
    assert_oauth_error(response, 401, "invalid_client", basic_challenge=True)


def test_server_still_healthy_after_the_abuse(tenant: TenantSetup) -> None:
    assert httpx.get(tenant.server.base_url + "/healthz").status_code == 200
    assert token_request(tenant.server, tenant.agent, tenant.crm).status_code == 200
