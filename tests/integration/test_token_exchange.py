"""On behalf of a user: a trusted IdP's assertion exchanged for a delegated token (RFC 8693)."""

import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import TenantSetup
from tests.support.idp import FakeIdP, running_idp

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    with running_idp() as running:
        yield running


@pytest.fixture
def setup(tenant: TenantSetup, idp: FakeIdP) -> TenantSetup:
    tenant.server.cli(
        "issuers",
        "add",
        idp.issuer,
        "--tenant",
        tenant.name,
        "--jwks-uri",
        idp.jwks_uri,
        "--audience",
        "valetkey",
    )
    tenant.server.cli("users", "create", "mia@acme.example", "--tenant", tenant.name)
    return tenant


def _exchange(setup: TenantSetup, assertion: str, **extra: str) -> httpx.Response:
    agent = setup.agent
    form = {"grant_type": EXCHANGE, "subject_token": assertion, "subject_token_type": JWT_TYPE,
            "resource": setup.crm, **extra}  # fmt: skip
    form = {k: v for k, v in form.items() if v}
    return httpx.post(
        setup.server.base_url + "/oauth/token",
        data=form,
        auth=(agent["client_id"], agent["client_secret"]),
    )


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == code, response.text


def _delegate(setup: TenantSetup, email: str, *scopes: str, extra: tuple[str, ...] = ()) -> Any:
    args = ["delegations", "create", "--tenant", setup.name, "--user", email,
            "--agent", setup.agent["id"]]  # fmt: skip
    for scope in scopes:
        args += ["--scope", scope]
    return setup.server.cli(*args, *extra)


def test_the_on_behalf_of_story(setup: TenantSetup, idp: FakeIdP) -> None:
    _delegate(setup, "mia@acme.example", "deals:read", extra=("--resource", setup.crm))
    response = _exchange(setup, idp.assertion("mia@acme.example"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "deals:read"
    keys = jwt.PyJWKClient(setup.server.base_url + "/jwks")
    token = body["access_token"]
    claims = jwt.decode(
        token,
        keys.get_signing_key_from_jwt(token),
        algorithms=["ES256"],
        audience=setup.crm,
        issuer=setup.server.issuer,
    )
    users = setup.server.cli("users", "list", "--tenant", setup.name)
    mia = next(u for u in users if u["email"] == "mia@acme.example")
    assert claims["sub"] == mia["id"]
    assert claims["client_id"] == setup.agent["id"]
    assert claims["act"] == {"sub": setup.agent["id"]}
    assert claims["aud"] == setup.crm
    assert claims["exp"] - claims["iat"] <= 300
    events = setup.server.cli(
        "audit", "search", "--tenant", setup.name, "--type", "token.exchanged"
    )
    assert events[0]["user_id"] == mia["id"]
    assert events[0]["agent_id"] == setup.agent["id"]
    assert events[0]["jti"] == claims["jti"]


def test_effective_scope_is_the_intersection(setup: TenantSetup, idp: FakeIdP) -> None:
    # Sam (admin) delegates deals:write, but the agent itself may only read: read it is.
    _delegate(setup, "sam@acme.example", "deals:write")
    body = _exchange(setup, idp.assertion("sam@acme.example")).json()
    assert body["scope"] == "deals:read"
    _error(
        _exchange(setup, idp.assertion("sam@acme.example"), scope="deals:write"),
        400,
        "invalid_scope",
    )


def test_lifetime_never_outlives_the_assertion(setup: TenantSetup, idp: FakeIdP) -> None:
    _delegate(setup, "mia@acme.example", "deals:read")
    assertion = idp.assertion("mia@acme.example", exp=int(time.time()) + 60)
    body = _exchange(setup, assertion).json()
    assert 0 < body["expires_in"] <= 60


def test_refusals(setup: TenantSetup, idp: FakeIdP) -> None:
    _error(_exchange(setup, idp.assertion("mia@acme.example")), 400, "invalid_grant")  # no consent
    _delegate(setup, "mia@acme.example", "deals:read", extra=("--resource", setup.crm))
    now = int(time.time())
    _error(
        _exchange(setup, idp.assertion("mia@acme.example", exp=now - 120)), 400, "invalid_request"
    )  # expired
    _error(
        _exchange(setup, idp.assertion("mia@acme.example", audience="other")),
        400,
        "invalid_request",
    )  # wrong audience
    _error(
        _exchange(setup, idp.assertion("nobody@acme.example")), 400, "invalid_request"
    )  # not a user of this tenant
    with running_idp("https://evil.example") as evil:
        _error(_exchange(setup, evil.assertion("mia@acme.example")), 400, "invalid_request")
    forged = running_idp(idp.issuer)  # right issuer name, wrong key
    with forged as impostor:
        _error(_exchange(setup, impostor.assertion("mia@acme.example")), 400, "invalid_request")
    _error(_exchange(setup, "not-a-jwt"), 400, "invalid_request")
    _error(
        _exchange(setup, idp.assertion("mia@acme.example"), subject_token_type=""),
        400,
        "invalid_request",
    )
    _error(
        _exchange(setup, idp.assertion("mia@acme.example"), actor_token="x"), 400, "invalid_request"
    )  # actor_token without its type
    setup.server.cli(
        "resources",
        "create",
        "https://mail.acme.example",
        "--tenant",
        setup.name,
        "--scope",
        "mail:read",
    )
    _error(
        _exchange(setup, idp.assertion("mia@acme.example"), resource="https://mail.acme.example"),
        400,
        "invalid_target",
    )  # not delegated
    setup.server.cli("users", "deactivate", "mia@acme.example", "--tenant", setup.name)
    _error(_exchange(setup, idp.assertion("mia@acme.example")), 400, "invalid_grant")
    setup.server.cli("agents", "suspend", setup.agent["id"])
    _error(_exchange(setup, idp.assertion("sam@acme.example")), 401, "invalid_client")


def test_revoked_delegation_stops_new_exchanges(setup: TenantSetup, idp: FakeIdP) -> None:
    made = _delegate(setup, "mia@acme.example", "deals:read")
    assert _exchange(setup, idp.assertion("mia@acme.example")).status_code == 200
    setup.server.cli("delegations", "revoke", made["id"])
    _error(_exchange(setup, idp.assertion("mia@acme.example")), 400, "invalid_grant")


def _active(setup: TenantSetup, introspector: dict[str, Any], token: str) -> bool:
    response = httpx.post(
        setup.server.base_url + "/oauth/introspect",
        data={"token": token},
        auth=(introspector["client_id"], introspector["client_secret"]),
    )
    assert response.status_code == 200, response.text
    return bool(response.json()["active"])


def test_revoking_the_delegation_kills_its_tokens_at_once(setup: TenantSetup, idp: FakeIdP) -> None:
    introspector = setup.introspector()
    made = _delegate(setup, "mia@acme.example", "deals:read", extra=("--resource", setup.crm))
    token = _exchange(setup, idp.assertion("mia@acme.example")).json()["access_token"]
    assert _active(setup, introspector, token)
    claims = httpx.post(
        setup.server.base_url + "/oauth/introspect",
        data={"token": token},
        auth=(introspector["client_id"], introspector["client_secret"]),
    ).json()
    assert claims["act"] == {"sub": setup.agent["id"]}
    setup.server.cli("delegations", "revoke", made["id"])
    assert not _active(setup, introspector, token)


def test_deactivating_the_user_kills_their_delegated_tokens(
    setup: TenantSetup, idp: FakeIdP
) -> None:
    introspector = setup.introspector()
    _delegate(setup, "mia@acme.example", "deals:read")
    token = _exchange(setup, idp.assertion("mia@acme.example")).json()["access_token"]
    assert _active(setup, introspector, token)
    setup.server.cli("users", "deactivate", "mia@acme.example", "--tenant", setup.name)
    assert not _active(setup, introspector, token)


def test_tenant_configuration_changes_apply_to_the_next_exchange(
    setup: TenantSetup, idp: FakeIdP
) -> None:
    """Role scopes and trusted issuers are cached per process, keyed by the tenant's
    version: a change made through the CLI (another process) applies at once."""
    setup.server.cli("resources", "create", "https://mail.acme.example", "--tenant", setup.name,
                     "--scope", "mail:read")  # fmt: skip
    _delegate(setup, "mia@acme.example", "deals:read")
    assert _exchange(setup, idp.assertion("mia@acme.example")).status_code == 200
    setup.server.cli("roles", "set", "member", "--tenant", setup.name, "--scope", "mail:read")
    _error(_exchange(setup, idp.assertion("mia@acme.example")), 400, "invalid_scope")
    setup.server.cli("roles", "set", "member", "--tenant", setup.name, "--scope", "deals:read")
    assert _exchange(setup, idp.assertion("mia@acme.example")).status_code == 200
    with running_idp("https://login.partner.example") as partner:
        _error(_exchange(setup, partner.assertion("mia@acme.example")), 400, "invalid_request")
        setup.server.cli("issuers", "add", partner.issuer, "--tenant", setup.name,
                         "--jwks-uri", partner.jwks_uri, "--audience", "valetkey")  # fmt: skip
        assert _exchange(setup, partner.assertion("mia@acme.example")).status_code == 200
