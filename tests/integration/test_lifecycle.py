"""Agent lifecycle over real HTTP: suspension effective on the very next request, resume,
decommission for good, secret rotation with a grace period, sponsors leaving; and the
introspection (RFC 7662) and revocation (RFC 7009) endpoints that make it visible.
"""

import calendar
import time
from typing import Any

import jwt
import pytest

from tests.conftest import TenantSetup
from tests.integration.helpers import (
    access_token,
    assert_oauth_error,
    cli_error,
    introspect,
    introspection,
    introspector_of,
    make_tenant,
    post,
    revoke,
    server_signing_key,
    token_request,
)
from tests.support.server import RunningServer

INACTIVE = {"active": False}


@pytest.fixture(scope="module")
def shared(server: RunningServer) -> TenantSetup:
    """A tenant for the tests that change nothing another test relies on."""
    return make_tenant(server)


def refused_token(tenant: TenantSetup, agent: dict[str, Any], secret: str | None = None) -> None:
    response = token_request(tenant.server, agent, tenant.crm, secret=secret)
    assert_oauth_error(response, 401, "invalid_client")


# suspension --------------------------------------------------------------------------------
def test_suspension_is_effective_on_the_very_next_request(tenant: TenantSetup) -> None:
    server, agent = tenant.server, tenant.agent
    rs = introspector_of(tenant)
    token = access_token(tenant)
    assert introspection(server, rs, token)["active"] is True

    shown = server.cli("agents", "suspend", agent["id"])
    assert shown["status"] == "suspended"

    refused_token(tenant, agent)
    assert introspection(server, rs, token) == INACTIVE
    assert server.cli("agents", "show", agent["id"])["status"] == "suspended"
    # suspending again changes nothing and is not an error
    assert server.cli("agents", "suspend", agent["id"])["status"] == "suspended"


def test_suspended_agent_refused_with_basic_carries_the_challenge(tenant: TenantSetup) -> None:
    """RFC 6749 §5.2: a 401 to a client that used the Authorization header MUST carry
    WWW-Authenticate, whatever the reason for the refusal."""
    tenant.server.cli("agents", "suspend", tenant.agent["id"])
    response = token_request(tenant.server, tenant.agent, tenant.crm)
    assert_oauth_error(response, 401, "invalid_client", basic_challenge=True)


def test_suspended_agent_refused_with_client_secret_post(tenant: TenantSetup) -> None:
    agent = tenant.agent
    tenant.server.cli("agents", "suspend", agent["id"])
    form = {
        "grant_type": "client_credentials",
        "resource": tenant.crm,
        "client_id": agent["id"],
        "client_secret": agent["client_secret"],
    }
    assert_oauth_error(post(tenant.server, "/oauth/token", form), 401, "invalid_client")


def test_suspended_agent_cannot_revoke(tenant: TenantSetup) -> None:
    token = access_token(tenant)
    tenant.server.cli("agents", "suspend", tenant.agent["id"])
    assert_oauth_error(revoke(tenant.server, tenant.agent, token), 401, "invalid_client")


def test_resume_restores_issuance_but_not_the_old_tokens(tenant: TenantSetup) -> None:
    server, agent = tenant.server, tenant.agent
    rs = introspector_of(tenant)
    old = access_token(tenant)
    server.cli("agents", "suspend", agent["id"])
    shown = server.cli("agents", "resume", agent["id"])
    assert shown["status"] == "active"
    new = access_token(tenant)
    # tokens held before the suspension stay dead: a suspension is a kill switch
    assert introspection(server, rs, old) == INACTIVE
    assert jwt.decode(new, options={"verify_signature": False})["sub"] == agent["id"]


def test_token_issued_right_after_resume_is_active(tenant: TenantSetup) -> None:
    """Suspend, resume and issue within one second: the new token must be live.

    `revoked_before` is the suspension time (sub-second) while `iat` is whole seconds, so
    a token minted in the same second as the suspension looks older than it and is dead on
    arrival for its whole lifetime. Start at a second boundary to make that deterministic.
    """
    server, agent = tenant.server, tenant.agent
    rs = introspector_of(tenant)
    time.sleep(1.0 - time.time() % 1.0 + 0.005)
    server.cli("agents", "suspend", agent["id"])
    server.cli("agents", "resume", agent["id"])
    token = access_token(tenant)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert introspection(server, rs, token)["active"] is True, claims


# decommissioning ---------------------------------------------------------------------------
@pytest.mark.parametrize("from_status", ["active", "suspended"])
def test_decommission_is_final(tenant: TenantSetup, from_status: str) -> None:
    server, agent = tenant.server, tenant.agent
    rs = introspector_of(tenant)
    token = access_token(tenant)
    if from_status == "suspended":
        server.cli("agents", "suspend", agent["id"])
    shown = server.cli("agents", "decommission", agent["id"])
    assert shown["status"] == "decommissioned"
    assert shown["credentials"] == {"secrets": [], "keys": []}

    refused_token(tenant, agent)
    assert introspection(server, rs, token) == INACTIVE

    message = cli_error(server, "agents", "resume", agent["id"], "--json")
    assert "decommissioned" in message
    cli_error(server, "agents", "suspend", agent["id"], "--json")
    cli_error(server, "agents", "rotate-secret", agent["id"], "--json")
    assert server.cli("agents", "show", agent["id"])["status"] == "decommissioned"
    refused_token(tenant, agent)


def test_lifecycle_of_an_unknown_agent_fails_cleanly(shared: TenantSetup) -> None:
    for verb in ("suspend", "resume", "decommission", "show", "rotate-secret"):
        cli_error(shared.server, "agents", verb, "agt_doesnotexist", "--json")


# introspection (RFC 7662) -------------------------------------------------------------------
def test_active_introspection_response(shared: TenantSetup) -> None:
    server, agent = shared.server, shared.agent
    token = access_token(shared)
    body = introspection(server, introspector_of(shared), token)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert body["active"] is True
    assert body["token_type"] == "Bearer"
    for name in ("iss", "sub", "client_id", "aud", "scope", "iat", "exp", "jti", "tenant"):
        assert body[name] == claims[name], name
    assert body["sub"] == body["client_id"] == agent["id"]
    assert body["tenant"] == shared.tenant["id"]


def test_token_type_hint_is_accepted(shared: TenantSetup) -> None:
    token = access_token(shared)
    rs = introspector_of(shared)
    for hint in ("access_token", "refresh_token"):
        response = introspect(shared.server, rs, token, token_type_hint=hint)
        assert response.status_code == 200
        assert response.json()["active"] is True


@pytest.mark.parametrize("rights", [(), ("pdp",)], ids=["no-rights", "pdp-only"])
def test_introspection_needs_the_introspect_right(
    shared: TenantSetup, rights: tuple[str, ...]
) -> None:
    server = shared.server
    args = ["clients", "create", f"no-right-{len(rights)}", "--tenant", shared.name]
    for right in rights:
        args += ["--right", right]
    service = server.cli(*args)
    assert service["rights"] == list(rights)
    token = access_token(shared)
    assert_oauth_error(introspect(server, service, token), 403, "unauthorized_client")
    # and an agent holds no introspect right either, not even for its own token
    assert_oauth_error(introspect(server, shared.agent, token), 403, "unauthorized_client")


def test_introspection_requires_client_authentication(shared: TenantSetup) -> None:
    server = shared.server
    token = access_token(shared)
    rs = introspector_of(shared)
    response = post(server, "/oauth/introspect", {"token": token})
    assert_oauth_error(response, 401, "invalid_client")
    response = post(server, "/oauth/introspect", {"token": token}, auth=(rs["client_id"], "x"))
    assert_oauth_error(response, 401, "invalid_client", basic_challenge=True)
    response = post(server, "/oauth/introspect", {}, auth=(rs["client_id"], rs["client_secret"]))
    assert_oauth_error(response, 400, "invalid_request")


def forge(server: Any, claims: dict[str, Any], **header: Any) -> str:
    """A token signed with the server's own active key (read from its database)."""
    kid, pem = server_signing_key(server)
    return jwt.encode(
        claims, pem, algorithm="ES256", headers={"kid": kid, "typ": "at+jwt", **header}
    )


def test_inactive_tokens_answer_exactly_active_false(shared: TenantSetup) -> None:
    server = shared.server
    rs = introspector_of(shared)
    token = access_token(shared)
    claims = jwt.decode(token, options={"verify_signature": False})
    now = int(time.time())
    head, payload, signature = token.split(".")
    wider = {**claims, "scope": "deals:admin"}
    other_key = jwt.encode(wider, _throwaway_ec_key(), algorithm="ES256", headers={"typ": "at+jwt"})
    candidates = {
        "garbage": "not-a-token",
        "three dots": "a.b.c",
        "truncated signature": f"{head}.{payload}.{signature[:-4]}",
        "swapped payload": f"{head}.{other_key.split('.')[1]}.{signature}",
        "signed by another key": other_key,
        "expired": forge(server, {**claims, "iat": now - 1000, "exp": now - 100}),
        "foreign issuer": forge(server, {**claims, "iss": "https://evil.example"}),
        "not an access token (typ)": forge(server, claims, typ="JWT"),
        "unknown client": forge(server, {**claims, "client_id": "agt_ghost", "sub": "agt_ghost"}),
    }
    for name, candidate in candidates.items():
        assert introspection(server, rs, candidate) == INACTIVE, name
    # the forging works: the same key with the real claims is active
    assert introspection(server, rs, forge(server, claims))["active"] is True


def _throwaway_ec_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


# revocation (RFC 7009) --------------------------------------------------------------------
def test_agent_revokes_its_own_token(shared: TenantSetup) -> None:
    server = shared.server
    rs = introspector_of(shared)
    token, other = access_token(shared), access_token(shared)
    response = revoke(server, shared.agent, token)
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["cache-control"] == "no-store"
    assert introspection(server, rs, token) == INACTIVE
    assert introspection(server, rs, other)["active"] is True  # one token, not all
    assert revoke(server, shared.agent, token).status_code == 200  # twice is fine
    # revocation does not stop the agent getting new tokens
    assert introspection(server, rs, access_token(shared))["active"] is True


def test_revoking_garbage_is_200(shared: TenantSetup) -> None:
    assert revoke(shared.server, shared.agent, "not-a-token").status_code == 200


def test_revoke_needs_a_token_and_a_client(shared: TenantSetup) -> None:
    server, agent = shared.server, shared.agent
    response = post(server, "/oauth/revoke", {}, auth=(agent["id"], agent["client_secret"]))
    assert_oauth_error(response, 400, "invalid_request")
    response = post(server, "/oauth/revoke", {"token": access_token(shared)})
    assert_oauth_error(response, 401, "invalid_client")


def test_another_client_cannot_revoke_the_token(shared: TenantSetup) -> None:
    server = shared.server
    rs = introspector_of(shared)
    other = shared.new_agent("other-bot", "deals:read")
    token = access_token(shared)
    assert revoke(server, other, token).status_code == 200  # RFC 7009: no information leak
    assert revoke(server, rs, token).status_code == 200
    assert introspection(server, rs, token)["active"] is True


# secret rotation --------------------------------------------------------------------------
def test_rotate_secret_with_grace_keeps_the_old_secret_working(tenant: TenantSetup) -> None:
    server, agent = tenant.server, tenant.agent
    old = agent["client_secret"]
    before = time.time()
    rotated = server.cli("agents", "rotate-secret", agent["id"])
    assert rotated["client_id"] == agent["id"]
    new = rotated["client_secret"]
    assert new != old
    assert new.startswith("vk_cs_")
    assert len(new) >= len("vk_cs_") + 43  # 256 bits, base64url

    assert token_request(server, agent, tenant.crm, secret=new).status_code == 200
    assert token_request(server, agent, tenant.crm, secret=old).status_code == 200
    secrets = server.cli("agents", "show", agent["id"])["credentials"]["secrets"]
    assert len(secrets) == 2
    assert secrets[-1]["expires_at"] is None
    assert secrets[0]["expires_at"] is not None
    assert rotated["previous_expires_at"] == secrets[0]["expires_at"]
    expires = calendar.timegm(time.strptime(secrets[0]["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert before + 86400 - 5 <= expires <= time.time() + 86400 + 5


def test_rotate_secret_with_zero_grace_stops_the_old_secret_at_once(tenant: TenantSetup) -> None:
    server, agent = tenant.server, tenant.agent
    first = agent["client_secret"]
    second = server.cli("agents", "rotate-secret", agent["id"])["client_secret"]
    third = server.cli("agents", "rotate-secret", agent["id"], "--grace", "0")["client_secret"]
    assert token_request(server, agent, tenant.crm, secret=third).status_code == 200
    for dead in (first, second):
        refused_token(tenant, agent, secret=dead)
    live = [
        s
        for s in server.cli("agents", "show", agent["id"])["credentials"]["secrets"]
        if s["expires_at"] is None
    ]
    assert len(live) == 1


def test_rotate_secret_does_not_revive_a_suspended_agent(tenant: TenantSetup) -> None:
    server, agent = tenant.server, tenant.agent
    server.cli("agents", "suspend", agent["id"])
    new = server.cli("agents", "rotate-secret", agent["id"])["client_secret"]
    refused_token(tenant, agent, secret=new)


def test_rotate_secret_leaves_issued_tokens_alone(tenant: TenantSetup) -> None:
    rs = introspector_of(tenant)
    token = access_token(tenant)
    tenant.server.cli("agents", "rotate-secret", tenant.agent["id"], "--grace", "0")
    assert introspection(tenant.server, rs, token)["active"] is True


# sponsors ----------------------------------------------------------------------------------
def test_agents_outlive_their_deactivated_sponsor(tenant: TenantSetup) -> None:
    server, agent = tenant.server, tenant.agent
    second = tenant.new_agent("second-bot", "deals:read")
    rs = introspector_of(tenant)
    token = access_token(tenant)

    result = server.cli("users", "deactivate", "sam@acme.example", "--tenant", tenant.name)
    assert result["status"] == "deactivated"
    assert sorted(result["flagged_agents"]) == sorted([agent["id"], second["id"]])

    # the agent keeps working: its token stays active and it gets new ones
    assert introspection(server, rs, token)["active"] is True
    assert introspection(server, rs, access_token(tenant))["active"] is True
    shown = server.cli("agents", "show", agent["id"])
    assert shown["needs_sponsor"] is True
    assert shown["status"] == "active"
    listed = {a["id"]: a for a in server.cli("agents", "list", "--tenant", tenant.name)}
    assert listed[second["id"]]["needs_sponsor"] is True

    # a deactivated user sponsors nothing new
    cli_error(
        server,
        "agents", "create", "third-bot", "--tenant", tenant.name,
        "--sponsor", "sam@acme.example", "--scope", "deals:read", "--json",
    )  # fmt: skip
    cli_error(server, "agents", "set-sponsor", agent["id"], "sam@acme.example", "--json")

    server.cli("users", "create", "ops@acme.example", "--tenant", tenant.name)
    updated = server.cli("agents", "set-sponsor", agent["id"], "ops@acme.example")
    assert updated["needs_sponsor"] is False
    assert updated["sponsor"] == "ops@acme.example"
    assert server.cli("agents", "show", agent["id"])["needs_sponsor"] is False
    assert server.cli("agents", "show", second["id"])["needs_sponsor"] is True
    assert token_request(server, agent, tenant.crm).status_code == 200


def test_deactivating_twice_is_harmless(tenant: TenantSetup) -> None:
    server = tenant.server
    server.cli("users", "deactivate", "sam@acme.example", "--tenant", tenant.name)
    again = server.cli("users", "deactivate", "sam@acme.example", "--tenant", tenant.name)
    assert again["status"] == "deactivated"
    assert server.cli("agents", "show", tenant.agent["id"])["needs_sponsor"] is True
