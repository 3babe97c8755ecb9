"""An MCP client that knows only `{issuer}/mcp`, end to end: the official `mcp` SDK's own
client-side OAuth (`OAuthClientProvider`) meets the 401, discovers the protected resource
and authorization server metadata, registers itself (RFC 7591, or a client ID metadata
document), sends a person through ValetKey's sign-in and consent (authorization code, PKCE
S256, `resource`), and then works over the MCP gateway as the agent acting for that user:
tools listed by the scopes granted at consent, reads allowed, destructive calls held for a
human, calls outside the task's mandate denied, the upstream seeing only the user's own
platform credential, and every step on the audit log."""

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import mcp_types as types
import pytest
from mcp.shared.auth import OAuthClientMetadata, OAuthToken

from tests.conftest import TenantSetup
from tests.integration.helpers import audit_events, make_tenant, verify
from tests.support.databases import new_database_url
from tests.support.mcp_oauth import (
    Documents,
    McpOAuthClient,
    Person,
    https_documents,
    self_signed,
)
from tests.support.mcp_upstream import McpUpstream, upstream_of
from tests.support.platform import Platform, running_platform
from tests.support.server import RunningServer, running_server

PASSWORD = "correct horse battery staple"
MIA = "mia@acme.example"  # the user the agent works for
SAM = "sam@acme.example"  # the tenant's admin: sponsor and approver
REDIRECT = "http://127.0.0.1:33418/callback"
SECRET = "platform-client-secret-1a2b"
MCP_SCOPES = ("mcp:read", "mcp:write", "mcp:delete", "mcp:bulk", "mcp:send", "mcp:spend")
AUTO_APPROVE = ("--auto-approve-clients",
                *(a for s in MCP_SCOPES for a in ("--registration-scope", s)))  # fmt: skip


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("documents-tls"))


@pytest.fixture(scope="module")
def fresh(
    backend: str, tmp_path_factory: pytest.TempPathFactory, certificate: tuple[Path, Path]
) -> Iterator[RunningServer]:
    """A server of its own (the default tenant is server-wide) that may fetch client
    metadata documents from 127.0.0.1 over https with the test certificate."""
    tmp = tmp_path_factory.mktemp(f"mcp-oauth-{backend}")
    with running_server(new_database_url(backend, tmp), tmp / "data",
                        VALETKEY_FETCH_ALLOW_HOSTS="127.0.0.1",
                        SSL_CERT_FILE=str(certificate[0])) as server:  # fmt: skip
        yield server


@pytest.fixture(scope="module")
def documents(certificate: tuple[Path, Path]) -> Iterator[Documents]:
    with https_documents(*certificate) as running:
        yield running


@pytest.fixture
def platform() -> Iterator[Platform]:
    with running_platform(client_secret=SECRET) as running:
        yield running


@pytest.fixture
def upstream(platform: Platform) -> Iterator[McpUpstream]:
    with upstream_of(platform) as running:
        yield running


def setup(server: RunningServer, platform: Platform, upstream: McpUpstream, *default: str,
          holds: tuple[str, ...] = ("mcp:read", "mcp:delete")) -> TenantSetup:  # fmt: skip
    """The default tenant (`default` adds its registration settings) with the `crm` upstream
    behind `/mcp`, and Mia, a member whose role `holds` these scopes, who has a password and
    has connected her own CRM account (`mia@crm`)."""
    tenant = make_tenant(server)
    name = tenant.name
    server.cli("tenants", "set", name, "--default-tenant", *default)
    server.cli("providers", "add", "crm", "--tenant", name,
               "--authorize-url", platform.authorize_url, "--token-url", platform.token_url,
               "--api-base", platform.api_base, "--client-id", platform.client_id,
               "--client-secret-stdin", input=SECRET + "\n")  # fmt: skip
    server.cli("mcp", "upstreams", "add", "crm", "--tenant", name, "--url", upstream.url,
               "--provider", "crm")  # fmt: skip
    for tool in ("get_deal", "update_deal", "delete_deal"):
        server.cli("mcp", "tools", "set", "crm", tool, "--tenant", name,
                   "--resource", "crm:deals/{deal_id}")  # fmt: skip
    server.cli("users", "create", MIA, "--tenant", name)
    server.cli("roles", "set", "member", "--tenant", name,
               *(a for s in holds for a in ("--scope", s)))  # fmt: skip
    server.cli("users", "set-password", MIA, "--tenant", name, input=PASSWORD + "\n")
    refresh = platform.issue_refresh_token("mia@crm")
    server.cli("connections", "import", "--tenant", name, "--provider", "crm", "--user", MIA,
               "--refresh-token-stdin", input=refresh + "\n")  # fmt: skip
    return tenant


def client_metadata(name: str = "Claude Desktop") -> OAuthClientMetadata:
    """What the MCP client says about itself: a public client on a loopback redirect."""
    return OAuthClientMetadata(redirect_uris=[REDIRECT], client_name=name,  # type: ignore[list-item]
                               token_endpoint_auth_method="none")  # fmt: skip


def text(result: types.CallToolResult) -> str:
    return "".join(b.text for b in result.content if isinstance(b, types.TextContent))


def approval_of(result: types.CallToolResult) -> str:
    assert result.is_error, text(result)
    decision = (result.meta or {})["valetkey/decision"]
    assert decision["decision"] == "approval_required", decision
    approval_id = str(decision["approval"]["id"])
    assert approval_id in text(result) and "same arguments" in text(result)
    return approval_id


def events(server: RunningServer, tenant: str, type_: str) -> list[dict[str, Any]]:
    found = audit_events(server, "--tenant", tenant, "--type", type_)
    return sorted(found, key=lambda e: int(e["seq"]))


def user_id(server: RunningServer, tenant: str, email: str) -> str:
    (user,) = [u for u in server.cli("users", "list", "--tenant", tenant) if u["email"] == email]
    return str(user["id"])


def steps(client: McpOAuthClient) -> list[tuple[str, str, int]]:
    return [(e.method, urlsplit(e.url).path, e.status) for e in client.exchanges]


def test_the_server_tells_an_mcp_client_all_it_needs(fresh: RunningServer) -> None:
    """What the SDK reads: the challenge, RFC 9728 and RFC 8414 metadata."""
    bare = httpx.post(fresh.base_url + "/mcp", json={"jsonrpc": "2.0", "id": 1,
                                                     "method": "tools/list"})  # fmt: skip
    assert bare.status_code == 401
    prm_url = f"{fresh.issuer}/.well-known/oauth-protected-resource/mcp"
    assert f'resource_metadata="{prm_url}"' in bare.headers["www-authenticate"]
    prm = httpx.get(prm_url).json()
    assert prm["resource"] == f"{fresh.issuer}/mcp" and prm["authorization_servers"] == [
        fresh.issuer]  # fmt: skip
    assert prm["scopes_supported"] == list(MCP_SCOPES)  # what the SDK will ask for
    metadata = httpx.get(fresh.base_url + "/.well-known/oauth-authorization-server").json()
    assert metadata["issuer"] == fresh.issuer
    assert metadata["registration_endpoint"] == f"{fresh.issuer}/oauth/register"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["client_id_metadata_document_supported"] is True
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert "none" in metadata["token_endpoint_auth_methods_supported"]
    assert {"authorization_code", "refresh_token"} <= set(metadata["grant_types_supported"])


def test_dynamic_registration_sign_in_consent_then_the_gateway(
    fresh: RunningServer, platform: Platform, upstream: McpUpstream
) -> None:
    """RFC 7591: the client registers as a pending agent asking for every scope the
    resource metadata lists; the admin approves it while Mia's browser shows that it waits;
    Mia signs in and allows what she holds herself (`mcp:read`, `mcp:delete`); the MCP calls
    then act for Mia with her own CRM account."""
    tenant = setup(fresh, platform, upstream)
    name = tenant.name
    approved: list[dict[str, Any]] = []

    def approve(client_id: str) -> None:
        approved.append(fresh.cli("agents", "approve", client_id, "--sponsor", SAM))

    person = Person(fresh.base_url, MIA, PASSWORD, approve=approve)
    client = McpOAuthClient(f"{fresh.issuer}/mcp", person, client_metadata())
    tools = client.tools()

    # The SDK found its way from the bare URL: 401, discovery, registration, code, token.
    assert steps(client)[:6] == [
        ("POST", "/mcp", 401),
        ("GET", "/.well-known/oauth-protected-resource/mcp", 200),
        ("GET", "/.well-known/oauth-authorization-server", 200),
        ("POST", "/oauth/register", 201),
        ("POST", "/oauth/token", 200),
        ("POST", "/mcp", 200),
    ], steps(client)
    challenge = client.exchanges[0].headers["www-authenticate"]
    assert client.exchanges[0].authorization is None and "resource_metadata=" in challenge
    registered = client.storage.client_info
    assert registered is not None and registered.client_id.startswith("agt_")
    assert registered.client_secret is None and registered.token_endpoint_auth_method == "none"
    agent_id = registered.client_id
    (asked,) = person.opened
    assert asked["client_id"] == agent_id and asked["redirect_uri"] == REDIRECT
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
    assert asked["resource"] == f"{fresh.issuer}/mcp"
    # No `scope` in the challenge: the SDK asks for the resource metadata's scopes_supported.
    assert asked["scope"].split() == list(MCP_SCOPES)
    assert registered.scope is not None and registered.scope.split() == list(MCP_SCOPES)
    waiting, consent = person.pages
    assert "awaits an admin" in waiting and approved[0]["status"] == "active"
    granted, withheld = consent.split("<dt>Not granted</dt>")
    assert agent_id in granted and "<code>mcp:delete</code>" in granted
    assert "<code>mcp:write</code>" in withheld and "<code>mcp:write</code>" not in granted
    assert person.answers[0]["iss"] == fresh.issuer

    # A delegated token: Mia is the subject, the agent the actor, for {issuer}/mcp only.
    claims = verify(fresh, client.access_token, f"{fresh.issuer}/mcp")
    mia = user_id(fresh, name, MIA)
    assert claims["sub"] == mia and claims["act"] == {"sub": agent_id}
    assert claims["client_id"] == agent_id
    assert set(claims["scope"].split()) == {"mcp:read", "mcp:delete"}
    assert client.storage.tokens is not None and client.storage.tokens.refresh_token

    # Listed: what the consent granted (no mcp:write, so no update_deal).
    assert set(tools) == {"crm__get_deal", "crm__read_email", "crm__delete_deal"}
    assert tools["crm__delete_deal"].annotations.destructive_hint  # type: ignore[union-attr]

    read = client.call("crm__get_deal", {"deal_id": "42"})
    assert not read.is_error, text(read)
    assert '"owner": "mia@crm"' in text(read)  # Mia's own CRM account, not anyone else's
    (seen,) = upstream.calls_to("get_deal")
    assert seen.user == "mia@crm" and seen.headers["x-agent-id"] == agent_id
    assert seen.headers["authorization"].startswith("Bearer plat_at_")
    token = client.access_token
    assert upstream.requests and all(token not in str(r.headers) for r in upstream.requests)

    held = client.call("crm__delete_deal", {"deal_id": "7"})
    approval = approval_of(held)
    assert upstream.calls_to("delete_deal") == []
    fresh.cli("approvals", "approve", approval, "--by", SAM)
    done = client.call("crm__delete_deal", {"deal_id": "7"})  # the same call, once more
    assert not done.is_error and text(done) == "deal 7 deleted", text(done)
    again = client.call("crm__delete_deal", {"deal_id": "7"})  # spent: a new approval
    assert approval_of(again) != approval and len(upstream.calls_to("delete_deal")) == 1

    # One sign-in for the whole session; later clients reused the stored token.
    assert len(person.opened) == 1
    assert [s for s in steps(client) if s[1] != "/mcp"] == steps(client)[1:5]
    assert {e.authorization for e in client.exchanges[5:]} == {f"Bearer {token}"}

    # The audit log tells the story.
    (reg,) = events(fresh, name, "agent.registered")
    assert reg["agent_id"] == agent_id and reg["data"]["status"] == "pending"
    assert reg["data"]["public"] is True and reg["data"]["client_name"] == "Claude Desktop"
    assert reg["data"]["scopes"] == list(MCP_SCOPES)
    (ok,) = events(fresh, name, "agent.approved")
    assert ok["agent_id"] == agent_id
    (delegated,) = events(fresh, name, "delegation.created")
    assert delegated["user_id"] == mia
    (issued,) = [e for e in events(fresh, name, "token.issued") if e["agent_id"] == agent_id]
    assert issued["user_id"] == mia and issued["jti"] == claims["jti"]
    assert issued["data"]["grant_type"] == "authorization_code"
    assert issued["data"]["aud"] == f"{fresh.issuer}/mcp"
    decided = [(e["data"]["intent"]["action"], e["data"]["decision"])
               for e in events(fresh, name, "decision.made")]  # fmt: skip
    assert decided == [("mcp:crm.get_deal", "allow"), ("mcp:crm.delete_deal", "approval_required"),
                       ("mcp:crm.delete_deal", "allow"),
                       ("mcp:crm.delete_deal", "approval_required")]  # fmt: skip
    called = events(fresh, name, "mcp.tool_called")
    assert [(e["data"]["tool"], e["data"]["decision"], e["data"]["status"]) for e in called] == [
        ("get_deal", "allow", "ok"), ("delete_deal", "approval_required", None),
        ("delete_deal", "allow", "ok"), ("delete_deal", "approval_required", None)]  # fmt: skip
    assert {(e["agent_id"], e["user_id"], e["jti"]) for e in called} == {
        (agent_id, mia, claims["jti"])}  # fmt: skip
    assert called[2]["data"]["approval_id"] == approval


def test_a_client_id_metadata_document_and_a_task_mandate(
    fresh: RunningServer, platform: Platform, upstream: McpUpstream, documents: Documents
) -> None:
    """The client names itself with an https URL (no registration request); the tenant
    approves registrations at once (within the `mcp:*` scopes); the sign-in carries a task
    mandate (`authorization_details`, added to the SDK's authorization URL), which narrows
    the tools listed and denies a call outside it, though the token holds its scope."""
    tenant = setup(fresh, platform, upstream, *AUTO_APPROVE)
    name = tenant.name
    path = f"/clients/{name}/desk.json"
    url = documents.serve(path, {
        "client_id": documents.base + path, "client_name": "Desk MCP",
        "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"})  # fmt: skip
    mandate = [{"type": "mandate", "actions": ["read"], "locations": ["crm:deals/*"],
                "user_request": "What is the latest on deal 42?"}]  # fmt: skip
    person = Person(fresh.base_url, MIA, PASSWORD,
                    extra={"authorization_details": json.dumps(mandate)})  # fmt: skip
    client = McpOAuthClient(f"{fresh.issuer}/mcp", person, client_metadata("Desk MCP"),
                            client_metadata_url=url)  # fmt: skip
    tools = client.tools()

    assert steps(client)[:5] == [
        ("POST", "/mcp", 401),
        ("GET", "/.well-known/oauth-protected-resource/mcp", 200),
        ("GET", "/.well-known/oauth-authorization-server", 200),
        ("POST", "/oauth/token", 200),  # no /oauth/register: the URL is the client id
        ("POST", "/mcp", 200),
    ], steps(client)
    (asked,) = person.opened
    assert asked["client_id"] == url and asked["resource"] == f"{fresh.issuer}/mcp"
    assert documents.fetches[path] >= 1
    agent_id = "agt_" + hashlib.sha256(url.encode()).hexdigest()[:24]
    (consent,) = person.pages
    assert "What is the latest on deal 42?" in consent and "crm:deals/*" in consent

    claims = verify(fresh, client.access_token, f"{fresh.issuer}/mcp")
    assert claims["client_id"] == agent_id and claims["act"] == {"sub": agent_id}
    assert claims["sub"] == user_id(fresh, name, MIA)
    assert set(claims["scope"].split()) == {"mcp:read", "mcp:delete"}
    assert claims["authorization_details"] == mandate

    # Only what the mandate names: reading deals (not the mail, not deleting).
    assert set(tools) == {"crm__get_deal"}
    inside = client.call("crm__get_deal", {"deal_id": "42"})
    assert not inside.is_error and '"owner": "mia@crm"' in text(inside), text(inside)
    outside = client.call("crm__delete_deal", {"deal_id": "42"})  # in scope, not in the task
    assert outside.is_error and "intent_outside_mandate" in text(outside), text(outside)
    assert (outside.meta or {})["valetkey/decision"]["decision"] == "deny"
    mail = client.call("crm__read_email", {"message_id": "1"})
    assert mail.is_error and "intent_outside_mandate" in text(mail), text(mail)
    assert [c.tool for c in upstream.calls] == ["get_deal"]

    (reg,) = events(fresh, name, "agent.registered")
    assert reg["agent_id"] == agent_id and reg["data"]["metadata_document"] == url
    assert reg["data"]["status"] == "active" and set(reg["data"]["scopes"]) == set(MCP_SCOPES)
    (issued,) = [e for e in events(fresh, name, "token.issued") if e["agent_id"] == agent_id]
    assert issued["jti"] == claims["jti"]
    called = events(fresh, name, "mcp.tool_called")
    assert [(e["data"]["tool"], e["data"]["decision"]) for e in called] == [
        ("get_deal", "allow"), ("delete_deal", "deny"), ("read_email", "deny")]  # fmt: skip
    decided = {e["data"]["decision_id"]: e for e in events(fresh, name, "decision.made")}
    assert all(decided[e["data"]["decision_id"]]["data"]["decision"] == e["data"]["decision"]
               for e in called)  # fmt: skip


def test_a_token_for_another_audience_is_refused_and_the_client_signs_in_again(
    fresh: RunningServer, platform: Platform, upstream: McpUpstream
) -> None:
    """A live ValetKey token for the CRM resource is no key to `/mcp`: 401, never passed
    through. The SDK, holding only that token, takes the challenge and runs its flow."""
    tenant = setup(fresh, platform, upstream, *AUTO_APPROVE, holds=("mcp:read",))
    crm = httpx.post(fresh.base_url + "/oauth/token", data={
        "grant_type": "client_credentials", "resource": tenant.crm, "scope": "deals:read"},
        auth=(tenant.agent["client_id"], tenant.agent["client_secret"]))  # fmt: skip
    assert crm.status_code == 200, crm.text
    foreign = crm.json()["access_token"]
    person = Person(fresh.base_url, MIA, PASSWORD)
    client = McpOAuthClient(f"{fresh.issuer}/mcp", person, client_metadata())
    client.storage.tokens = OAuthToken(access_token=foreign, token_type="Bearer")
    tools = client.tools()
    refused = client.exchanges[0]
    assert (refused.method, urlsplit(refused.url).path, refused.status) == ("POST", "/mcp", 401)
    assert refused.authorization == f"Bearer {foreign}"
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert "resource_metadata=" in refused.headers["www-authenticate"]
    assert len(person.opened) == 1 and client.access_token != foreign
    assert verify(fresh, client.access_token, f"{fresh.issuer}/mcp")["scope"] == "mcp:read"
    assert set(tools) == {"crm__get_deal", "crm__read_email"}
    assert all(foreign not in str(r.headers) for r in upstream.requests)


def test_an_agent_approved_for_fewer_scopes_than_the_metadata_lists_still_signs_in(
    fresh: RunningServer, platform: Platform, upstream: McpUpstream
) -> None:
    """The tenant auto-approves registrations within `mcp:read mcp:delete` only. The SDK,
    finding no `scope` in the challenge, asks for all of the resource metadata's
    `scopes_supported` (MCP authorization, scope selection). ValetKey should grant what the
    agent may hold (RFC 6749 §3.3: the server may ignore part of the request and says so in
    the token response's `scope`) rather than refuse the whole sign-in."""
    setup(fresh, platform, upstream, "--auto-approve-clients", "--registration-scope",
          "mcp:read", "--registration-scope", "mcp:delete")  # fmt: skip
    person = Person(fresh.base_url, MIA, PASSWORD)
    client = McpOAuthClient(f"{fresh.issuer}/mcp", person, client_metadata())
    try:
        tools = client.tools()
    except Exception:
        got = person.answers[-1] if person.answers else {}
        if got.get("error") == "invalid_scope":  # known: the whole request is refused
            pytest.xfail(f"ValetKey refuses the SDK's scope request: {got}")
        raise
    assert set(client.storage.tokens.scope.split()) == {"mcp:read", "mcp:delete"}  # type: ignore[union-attr]
    assert set(tools) == {"crm__get_deal", "crm__read_email", "crm__delete_deal"}
