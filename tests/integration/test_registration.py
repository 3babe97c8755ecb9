"""Clients that register themselves (RFC 7591): they join the default tenant as pending
agents until an admin approves them (or within a scope ceiling, at once); public clients
use the code flow with PKCE and nothing else; and `/mcp` publishes its protected resource
metadata (RFC 9728)."""

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest

from tests.integration.helpers import make_tenant
from tests.support.databases import new_database_url
from tests.support.login import authorize
from tests.support.server import RunningServer, running_server

PASSWORD = "correct horse battery staple"
REDIRECT = "http://127.0.0.1:33418/callback"


@pytest.fixture(scope="module")
def fresh(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of its own: which tenant is the default is server-wide."""
    tmp = tmp_path_factory.mktemp(f"registration-{backend}")
    with running_server(new_database_url(backend, tmp), tmp / "data",
                        VALETKEY_FETCH_ALLOW_HOSTS="127.0.0.1") as server:  # fmt: skip
        yield server


def register(server: RunningServer, **metadata: Any) -> httpx.Response:
    body = {"redirect_uris": [REDIRECT], "client_name": "Claude Desktop", **metadata}
    return httpx.post(server.base_url + "/oauth/register", json=body, timeout=30)


def test_registration_is_closed_without_a_default_tenant(fresh: RunningServer) -> None:
    closed = register(fresh)
    assert closed.status_code == 400
    assert closed.json()["error"] == "invalid_client_metadata"


def test_a_public_client_registers_waits_for_approval_and_uses_the_code_flow(
    fresh: RunningServer,
) -> None:
    tenant = make_tenant(fresh)
    fresh.cli("tenants", "set", tenant.name, "--default-tenant")
    metadata = httpx.get(fresh.base_url + "/.well-known/oauth-authorization-server").json()
    assert metadata["registration_endpoint"] == fresh.issuer + "/oauth/register"
    assert "none" in metadata["token_endpoint_auth_methods_supported"]
    made = register(fresh, token_endpoint_auth_method="none", scope="deals:read deals:nope",
                    grant_types=["authorization_code", "refresh_token"])  # fmt: skip
    assert made.status_code == 201, made.text
    client = made.json()
    assert client["client_id"].startswith("agt_") and "client_secret" not in client
    assert client["status"] == "pending" and client["scope"] == "deals:read"
    assert client["redirect_uris"] == [REDIRECT]
    fresh.cli("users", "set-password", "sam@acme.example", "--tenant", tenant.name,
              input=PASSWORD + "\n")  # fmt: skip
    with pytest.raises(AssertionError):  # pending: the authorization endpoint refuses it
        authorize(fresh.base_url, client["client_id"], REDIRECT, "sam@acme.example", PASSWORD,
                  scope="deals:read", resource=tenant.crm)  # fmt: skip
    approved = fresh.cli("agents", "approve", client["client_id"], "--sponsor",
                         "sam@acme.example")  # fmt: skip
    assert approved["status"] == "active" and approved["sponsor"] == "sam@acme.example"
    unnamed = _authorize_page(fresh, client["client_id"])  # public clients must send resource
    assert unnamed.status_code == 303 and "error=invalid_target" in unnamed.headers["location"]
    done = authorize(fresh.base_url, client["client_id"], REDIRECT, "sam@acme.example",
                     PASSWORD, scope="deals:read", resource=tenant.crm)  # fmt: skip
    token = httpx.post(fresh.base_url + "/oauth/token", data={
        "grant_type": "authorization_code", "code": done.code, "redirect_uri": REDIRECT,
        "code_verifier": done.verifier, "client_id": client["client_id"]})  # fmt: skip
    assert token.status_code == 200, token.text
    assert token.json()["scope"] == "deals:read"
    refreshed = httpx.post(fresh.base_url + "/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": token.json()["refresh_token"],
        "client_id": client["client_id"]})  # fmt: skip
    assert refreshed.status_code == 200, refreshed.text
    own = httpx.post(fresh.base_url + "/oauth/token", data={
        "grant_type": "client_credentials", "client_id": client["client_id"]})  # fmt: skip
    assert own.status_code == 400 and own.json()["error"] == "unauthorized_client"
    events = fresh.cli("audit", "search", "--tenant", tenant.name, "--type", "agent.registered")
    assert events[0]["agent_id"] == client["client_id"]


def test_auto_approval_within_a_scope_ceiling_and_confidential_clients(
    fresh: RunningServer,
) -> None:
    tenant = make_tenant(fresh)
    fresh.cli("tenants", "set", tenant.name, "--default-tenant", "--auto-approve-clients",
              "--registration-scope", "deals:read")  # fmt: skip
    made = register(fresh, scope="deals:read deals:write")
    assert made.status_code == 201, made.text
    client = made.json()
    assert client["status"] == "active" and client["scope"] == "deals:read"
    assert client["client_secret"] and client["client_secret_expires_at"] == 0
    token = httpx.post(fresh.base_url + "/oauth/token", data={
        "grant_type": "client_credentials", "resource": tenant.crm},
        auth=(client["client_id"], client["client_secret"]))  # fmt: skip
    assert token.status_code == 200, token.text
    # A confidential client naming itself without its secret is not a public client.
    bare = httpx.post(fresh.base_url + "/oauth/token", data={
        "grant_type": "client_credentials", "client_id": client["client_id"]})  # fmt: skip
    assert bare.status_code == 401 and bare.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"redirect_uris": []}, "invalid_redirect_uri"),
        ({"redirect_uris": ["http://evil.example/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "tls_client_auth"},
         "invalid_client_metadata"),
        ({"redirect_uris": [REDIRECT], "grant_types": ["client_credentials"]},
         "invalid_client_metadata"),
        ({"redirect_uris": [REDIRECT], "response_types": ["token"]}, "invalid_client_metadata"),
        ([1, 2], "invalid_client_metadata"),
    ],
)  # fmt: skip
def test_bad_metadata_is_refused(fresh: RunningServer, body: Any, error: str) -> None:
    tenant = make_tenant(fresh)
    fresh.cli("tenants", "set", tenant.name, "--default-tenant")
    refused = httpx.post(fresh.base_url + "/oauth/register", json=body)
    assert refused.status_code == 400 and refused.json()["error"] == error, refused.text
    garbage = httpx.post(fresh.base_url + "/oauth/register", content=b"{nope")
    assert garbage.json()["error"] == "invalid_client_metadata"


def test_mcp_protected_resource_metadata(fresh: RunningServer) -> None:
    found = httpx.get(fresh.base_url + "/.well-known/oauth-protected-resource/mcp").json()
    assert found["resource"] == fresh.issuer + "/mcp"
    assert found["authorization_servers"] == [fresh.issuer]
    assert "mcp:read" in found["scopes_supported"] and "mcp:delete" in found["scopes_supported"]
    # Origin is validated before anything else (MCP transport, DNS rebinding).
    url = fresh.base_url + "/mcp"
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    evil = httpx.post(url, json=body, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403 and evil.json()["code"] == "origin_not_allowed"
    rebound = httpx.post(url, json=body, headers={"Host": "evil.example"})
    assert rebound.status_code == 403
    own = httpx.post(url, json=body, headers={"Origin": fresh.issuer})
    assert own.status_code == 401 and "resource_metadata=" in own.headers["www-authenticate"]


def test_only_one_default_tenant(fresh: RunningServer) -> None:
    first, second = make_tenant(fresh), make_tenant(fresh)
    fresh.cli("tenants", "set", first.name, "--default-tenant")
    fresh.cli("tenants", "set", second.name, "--default-tenant")
    made = register(fresh).json()
    in_second = {a["id"] for a in fresh.cli("agents", "list", "--tenant", second.name)}
    in_first = {a["id"] for a in fresh.cli("agents", "list", "--tenant", first.name)}
    assert made["client_id"] in in_second and made["client_id"] not in in_first


class Documents:
    """Client ID metadata documents on 127.0.0.1 (allow-listed for this server)."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self.fetches = 0
        docs = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                docs.fetches += 1
                status, body, headers = docs.pages.get(self.path, (404, b"{}", {}))
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, path: str, document: Any, status: int = 200, **headers: str) -> str:
        self.pages[path] = (status, json.dumps(document).encode(), headers)
        return self.base + path


@pytest.fixture
def documents() -> Iterator[Documents]:
    running = Documents()
    yield running
    running.server.shutdown()
    running.server.server_close()


def _authorize_page(server: RunningServer, client_id: str) -> httpx.Response:
    return httpx.get(server.base_url + "/oauth/authorize", params={
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
        "code_challenge": "x" * 43, "code_challenge_method": "S256"})  # fmt: skip


def test_a_client_id_metadata_document_client(fresh: RunningServer, documents: Documents) -> None:
    tenant = make_tenant(fresh)
    fresh.cli("tenants", "set", tenant.name, "--default-tenant")
    url = documents.base + "/inspector/client.json"
    documents.serve("/inspector/client.json", {
        "client_id": url, "client_name": "MCP Inspector", "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none", "scope": "deals:read"})  # fmt: skip
    waiting = _authorize_page(fresh, url)
    assert waiting.status_code == 400 and "awaits an admin" in waiting.text
    agent_id = "agt_" + hashlib.sha256(url.encode()).hexdigest()[:24]
    listed = {a["id"]: a for a in fresh.cli("agents", "list", "--tenant", tenant.name)}
    assert listed[agent_id]["status"] == "pending"
    fresh.cli("agents", "approve", agent_id, "--sponsor", "sam@acme.example")
    fresh.cli("users", "set-password", "sam@acme.example", "--tenant", tenant.name,
              input=PASSWORD + "\n")  # fmt: skip
    done = authorize(fresh.base_url, url, REDIRECT, "sam@acme.example", PASSWORD,
                     scope="deals:read", resource=tenant.crm)  # fmt: skip
    token = httpx.post(fresh.base_url + "/oauth/token", data={
        "grant_type": "authorization_code", "code": done.code, "redirect_uri": REDIRECT,
        "code_verifier": done.verifier, "client_id": url})  # fmt: skip
    assert token.status_code == 200, token.text
    claims = jwt.decode(token.json()["access_token"], options={"verify_signature": False})
    assert claims["client_id"] == agent_id and claims["aud"] == tenant.crm
    assert documents.fetches <= 2  # cached, not fetched per request


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [("wrong-id", "not its own URL"), ("secret", "must not hold a client secret"),
     ("redirect", "answered 302"), ("huge", "too large"), ("private", "private address"),
     ("plain-http", "must be https"), ("confidential", "public")],
)  # fmt: skip
def test_unusable_metadata_documents_are_refused(
    fresh: RunningServer, documents: Documents, kind: str, fragment: str
) -> None:
    tenant = make_tenant(fresh)
    fresh.cli("tenants", "set", tenant.name, "--default-tenant")
    path = f"/{kind}/client.json"
    url = documents.base + path
    good = {"client_id": url, "client_name": "x", "redirect_uris": [REDIRECT]}
    if kind == "wrong-id":
        documents.serve(path, {**good, "client_id": documents.base + "/other.json"})
    elif kind == "secret":
        documents.serve(path, {**good, "client_secret": "s"})
    elif kind == "redirect":
        documents.serve(path, good, 302, Location=documents.base + "/elsewhere")
    elif kind == "huge":
        documents.serve(path, {**good, "padding": "x" * 20_000})
    elif kind == "confidential":
        documents.serve(path, {**good, "token_endpoint_auth_method": "client_secret_basic"})
    elif kind == "private":
        url = "https://10.1.2.3/client.json"
    else:
        url = "http://localhost:9/client.json"
    refused = _authorize_page(fresh, url)
    assert refused.status_code == 400 and fragment in refused.text, refused.text[:400]
