"""Tenants are trust boundaries: a token, client, secret or audit event of tenant A never
works for, or shows up in, tenant B."""

import time
from typing import Any

import jwt
import pytest

from tests.conftest import TenantSetup
from tests.integration.helpers import (
    access_token,
    assert_oauth_error,
    audit_events,
    cli_error,
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
def tenant(server: RunningServer) -> TenantSetup:
    """Tenant A for the whole module (the tests only change what is theirs alone)."""
    return make_tenant(server)


@pytest.fixture(scope="module")
def other(server: RunningServer) -> TenantSetup:
    """Tenant B: same sponsor email, same agent name, its own CRM resource."""
    return make_tenant(server)


def test_foreign_token_introspects_inactive(tenant: TenantSetup, other: TenantSetup) -> None:
    server = tenant.server
    token = access_token(tenant)
    assert introspection(server, introspector_of(tenant), token)["active"] is True
    assert introspection(server, introspector_of(other), token) == INACTIVE


def test_foreign_clients_cannot_revoke(tenant: TenantSetup, other: TenantSetup) -> None:
    server = tenant.server
    token = access_token(tenant)
    for foreign in (introspector_of(other), other.agent):
        response = revoke(server, foreign, token)
        assert response.status_code == 200  # RFC 7009: nothing is revealed either way
    assert introspection(server, introspector_of(tenant), token)["active"] is True


def test_agent_cannot_request_another_tenants_resource(
    tenant: TenantSetup, other: TenantSetup
) -> None:
    response = token_request(tenant.server, tenant.agent, other.crm)
    assert_oauth_error(response, 400, "invalid_target")
    response = token_request(tenant.server, tenant.agent, other.crm, scope="deals:read")
    assert_oauth_error(response, 400, "invalid_target")


def test_same_resource_uri_in_two_tenants_stays_apart(
    tenant: TenantSetup, other: TenantSetup
) -> None:
    server = tenant.server
    shared_uri = "https://shared-crm.example/" + tenant.name
    for t in (tenant, other):
        server.cli("resources", "create", shared_uri, "--tenant", t.name, "--scope", "s:read")
    a = tenant.new_agent("shared-a", "s:read")
    response = token_request(server, a, shared_uri)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["tenant"] == tenant.tenant["id"]
    assert introspection(server, introspector_of(other), token) == INACTIVE
    assert introspection(server, introspector_of(tenant), token)["active"] is True


def test_secret_of_one_tenant_does_not_open_another(
    tenant: TenantSetup, other: TenantSetup
) -> None:
    server = tenant.server
    a, b = tenant.agent, other.agent
    for client_id, secret in ((a["id"], b["client_secret"]), (b["id"], a["client_secret"])):
        response = token_request(server, {"client_id": client_id}, tenant.crm, secret=secret)
        assert_oauth_error(response, 401, "invalid_client", basic_challenge=True)
        response = token_request(server, {"client_id": client_id}, other.crm, secret=secret)
        assert_oauth_error(response, 401, "invalid_client", basic_challenge=True)
    # an introspector's secret with another tenant's introspector id fails too
    rs_a, rs_b = introspector_of(tenant), introspector_of(other)
    token = access_token(tenant)
    response = post(
        server,
        "/oauth/introspect",
        {"token": token},
        auth=(rs_b["client_id"], rs_a["client_secret"]),
    )
    assert_oauth_error(response, 401, "invalid_client", basic_challenge=True)


def test_cli_does_not_reach_across_tenants(tenant: TenantSetup, other: TenantSetup) -> None:
    server = tenant.server
    a = tenant.agent["id"]
    cli_error(server, "agents", "show", a, "--tenant", other.name, "--json")
    cli_error(server, "agents", "show", a, "--tenant", other.tenant["id"], "--json")
    for verb in ("suspend", "resume", "decommission", "rotate-secret"):
        cli_error(server, "agents", verb, a, "--tenant", other.name, "--json")
    cli_error(
        server, "agents", "set-sponsor", a, "sam@acme.example", "--tenant", other.name, "--json"
    )

    # nothing happened to A's agent
    shown = server.cli("agents", "show", a, "--tenant", tenant.name)
    assert shown["status"] == "active"
    assert len(shown["credentials"]["secrets"]) == 1
    assert token_request(server, tenant.agent, tenant.crm).status_code == 200

    # by name, each tenant sees its own invoice-bot
    assert (
        server.cli("agents", "show", "invoice-bot", "--tenant", other.name)["id"]
        == (other.agent["id"])
    )
    listed = [x["id"] for x in server.cli("agents", "list", "--tenant", other.name)]
    assert a not in listed


def test_sponsor_must_belong_to_the_agents_tenant(tenant: TenantSetup, other: TenantSetup) -> None:
    server = tenant.server
    server.cli("users", "create", "only-in-b@acme.example", "--tenant", other.name)
    cli_error(
        server, "agents", "set-sponsor", tenant.agent["id"], "only-in-b@acme.example", "--json"
    )
    cli_error(
        server,
        "agents", "create", "cross-bot", "--tenant", tenant.name,
        "--sponsor", "only-in-b@acme.example", "--scope", "deals:read", "--json",
    )  # fmt: skip


def test_audit_of_one_tenant_holds_nothing_of_another(
    tenant: TenantSetup, other: TenantSetup
) -> None:
    server = tenant.server
    token = access_token(tenant)
    token_request(server, tenant.agent, tenant.crm, scope="deals:admin")
    introspection(server, introspector_of(other), token)
    revoke(server, other.agent, token)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]

    b_events = audit_events(server, "--tenant", other.name)
    assert all(e["tenant"] == other.tenant["id"] for e in b_events)
    assert not [e for e in b_events if e["agent_id"] == tenant.agent["id"]]
    assert not [e for e in b_events if e["jti"] == jti]
    a_events = audit_events(server, "--tenant", tenant.name)
    assert [e for e in a_events if e["jti"] == jti]
    assert all(e["tenant"] == tenant.tenant["id"] for e in a_events)


def test_forged_tenant_claim_is_inactive(tenant: TenantSetup, other: TenantSetup) -> None:
    """Defence in depth: even a validly signed token whose `tenant` names B but whose client
    belongs to A (a bug elsewhere could mint one) is not active for B."""
    server = tenant.server
    kid, pem = server_signing_key(server)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": server.issuer,
        "sub": tenant.agent["id"],
        "client_id": tenant.agent["id"],
        "aud": other.crm,
        "scope": "deals:read",
        "tenant": other.tenant["id"],
        "iat": now,
        "exp": now + 300,
        "jti": "forged-" + str(now),
    }
    token = jwt.encode(claims, pem, algorithm="ES256", headers={"kid": kid, "typ": "at+jwt"})
    assert introspection(server, introspector_of(other), token) == INACTIVE
    assert introspection(server, introspector_of(tenant), token) == INACTIVE
