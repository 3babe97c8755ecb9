"""The tool gateway against a local platform with switchable quirks: the agent calls
`/v1/gateway/crm/…` with its own ValetKey token; the platform sees only its own token plus
`X-Agent-Id` / `X-Correlation-Id`. Refresh is single-flight, faults leave the stored
tokens intact, `invalid_grant` marks the connection `needs_reauth`, and no path, tenant or
user can reach a connection that is not the caller's."""

import base64
import concurrent.futures
import hashlib
import http.client
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import TenantSetup
from tests.integration.helpers import audit_events, make_tenant
from tests.support.dpop import DPoPClient, ProofKey
from tests.support.idp import FakeIdP, running_idp
from tests.support.mailbox import Mailbox
from tests.support.platform import (
    BIG_SIZE,
    MAIL_INJECTION,
    MAIL_VISIBLE,
    OFF_BASE_REDIRECT,
    Platform,
    Quirks,
    big_body,
    running_platform,
)
from tests.support.server import RunningServer

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
SECRET = "platform-client-secret-1a2b"


@pytest.fixture
def platform() -> Iterator[Platform]:
    with running_platform(client_secret=SECRET) as running:
        yield running


@pytest.fixture(scope="module")
def idp() -> Iterator[FakeIdP]:
    with running_idp() as running:
        yield running


def add_provider(server: RunningServer, tenant: str, platform: Platform, name: str = "crm") -> None:
    server.cli("providers", "add", name, "--tenant", tenant,
               "--authorize-url", platform.authorize_url, "--token-url", platform.token_url,
               "--revoke-url", platform.revoke_url, "--api-base", platform.api_base,
               "--client-id", platform.client_id, "--client-secret-stdin",
               input=SECRET + "\n")  # fmt: skip


def gateway_agent(tenant: TenantSetup, name: str = "crm-bot") -> dict[str, Any]:
    return tenant.new_agent(name, "crm:read", "crm:write", "crm:delete", "deals:read")


def gateway_token(
    server: RunningServer, agent: dict[str, Any], scope: str = "crm:read crm:write crm:delete"
) -> str:
    response = httpx.post(server.base_url + "/oauth/token", data={
        "grant_type": "client_credentials", "resource": f"{server.issuer}/v1/gateway/crm",
        "scope": scope}, auth=(agent["client_id"], agent["client_secret"]))  # fmt: skip
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def import_for(server: RunningServer, tenant: str, platform: Platform, *owner: str,
               user: str = "sam@acme.example") -> dict[str, Any]:  # fmt: skip
    refresh = platform.issue_refresh_token(user)
    return dict(server.cli("connections", "import", "--tenant", tenant, "--provider", "crm",
                           *owner, "--refresh-token-stdin", input=refresh + "\n"))  # fmt: skip


def call(server: RunningServer, token: str, path: str, method: str = "GET",
         **kw: Any) -> httpx.Response:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
    return httpx.request(method, f"{server.base_url}/v1/gateway/crm{path}", headers=headers,
                         timeout=30, **kw)  # fmt: skip


@pytest.fixture
def wired(tenant: TenantSetup, platform: Platform) -> tuple[TenantSetup, Platform, dict[str, Any]]:
    """A tenant with the `crm` provider, an agent allowed to use its gateway, and the
    agent's own connection (imported)."""
    add_provider(tenant.server, tenant.name, platform)
    agent = gateway_agent(tenant)
    import_for(tenant.server, tenant.name, platform, "--agent", agent["id"], user="bot@crm")
    return tenant, platform, agent


def test_the_platform_sees_its_own_token_and_never_the_agents(wired: Any) -> None:
    tenant, platform, agent = wired
    server = tenant.server
    token = gateway_token(server, agent)
    response = call(server, token, "/echo?q=1&sanitize=html", headers={
        "Cookie": "session=agent-cookie", "X-Correlation-Id": "cor-test-123",
        "X-Custom": "kept"})  # fmt: skip
    assert response.status_code == 200, response.text
    seen = platform.api_calls[-1]
    assert seen.headers["authorization"].startswith("Bearer plat_at_")
    assert token not in str(seen.headers)
    assert seen.headers["x-agent-id"] == agent["id"]
    assert seen.headers["x-correlation-id"] == "cor-test-123"
    assert seen.headers["x-custom"] == "kept"
    assert "cookie" not in seen.headers and "dpop" not in seen.headers
    assert seen.path == "/api/echo?q=1"  # ValetKey's own parameter is not forwarded
    assert seen.user == "bot@crm"
    assert response.headers["x-correlation-id"] == "cor-test-123"
    assert "set-cookie" not in response.headers
    events = audit_events(server, "--tenant", tenant.name, "--type", "gateway.called")
    assert events[-1]["data"]["status"] == 200
    assert events[-1]["data"]["latency_ms"] > 0
    assert events[-1]["agent_id"] == agent["id"]
    assert events[-1]["correlation_id"] == "cor-test-123"


def test_fifty_concurrent_calls_on_an_expired_token_refresh_once(wired: Any) -> None:
    tenant, platform, agent = wired
    server = tenant.server
    token = gateway_token(server, agent)

    def many() -> list[int]:
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            futures = [pool.submit(call, server, token, "/deals/42") for _ in range(50)]
            return [f.result().status_code for f in futures]

    assert many() == [200] * 50  # the imported connection has no access token yet
    assert platform.refresh_grants == 1 and platform.reuse_detected == 0
    platform.expire_access_tokens()  # the platform now answers 401 to the stored token
    assert many() == [200] * 50
    assert platform.refresh_grants == 2 and platform.reuse_detected == 0
    refreshed = audit_events(server, "--tenant", tenant.name, "--type", "connection.refreshed")
    assert len(refreshed) == 2 and all(e["data"]["rotated"] for e in refreshed)


def test_faults_leave_the_tokens_intact(wired: Any) -> None:
    tenant, platform, agent = wired
    server = tenant.server
    token = gateway_token(server, agent)
    assert call(server, token, "/deals/1").status_code == 200
    platform.expire_access_tokens()
    platform.quirks.token_status = 503
    failed = call(server, token, "/deals/1")
    assert failed.status_code == 502, failed.text
    assert failed.headers["content-type"] == "application/problem+json"
    assert failed.json()["code"] == "platform_unavailable"
    platform.quirks.token_status = None
    platform.quirks.api_status = 503  # the platform's own 5xx passes through untouched
    assert call(server, token, "/deals/1").status_code == 503
    platform.quirks.api_status = None
    assert call(server, token, "/deals/1").status_code == 200  # the same refresh token works
    assert platform.reuse_detected == 0
    shown = server.cli("connections", "list", "--tenant", tenant.name)
    assert [c["status"] for c in shown] == ["active"]


def test_invalid_grant_marks_needs_reauth_and_tells_the_owner(wired: Any, mailbox: Mailbox) -> None:
    tenant, platform, agent = wired
    server = tenant.server
    token = gateway_token(server, agent)
    platform.quirks.invalid_grant = True
    refused = call(server, token, "/deals/1")
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "connection_needs_reauth"
    before = platform.refresh_grants
    again = call(server, token, "/deals/1")
    assert again.status_code == 409 and platform.refresh_grants == before  # no retry storm
    (shown,) = server.cli("connections", "list", "--tenant", tenant.name)
    assert shown["status"] == "needs_reauth"
    mail = mailbox.wait_for(lambda m: "Reconnect crm" in m["Subject"], timeout=20)
    assert mail["To"] == "sam@acme.example"  # the agent's sponsor
    assert (
        audit_events(server, "--tenant", tenant.name, "--type", "connection.needs_reauth")[0][
            "data"
        ]["connection_id"]
        == shown["id"]
    )


def test_decisions_stand_in_front_of_the_platform(wired: Any) -> None:
    tenant, platform, agent = wired
    server, name = tenant.server, tenant.name
    reader = tenant.new_agent("crm-reader", "crm:read")
    import_for(server, name, platform, "--agent", reader["id"], user="reader@crm")
    read_only = gateway_token(server, reader, "crm:read")
    before = len(platform.api_calls)
    refused = call(server, read_only, "/deals/1", "PATCH", json={"stage": "won"})
    assert refused.status_code == 403 and refused.json()["code"] == "insufficient_scope"
    token = gateway_token(server, agent)
    held = call(server, token, "/deals/7", "DELETE")
    assert held.status_code == 403, held.text
    body = held.json()
    assert body["code"] == "approval_required" and body["approval"]["id"].startswith("apr_")
    assert len(platform.api_calls) == before  # nothing reached the platform
    server.cli("approvals", "approve", body["approval"]["id"], "--by", "sam@acme.example")
    done = call(server, token, "/deals/7", "DELETE",
                headers={"X-ValetKey-Approval": body["approval"]["id"]})  # fmt: skip
    assert done.status_code == 204, done.text
    assert platform.api_calls[-1].method == "DELETE"
    replay = call(server, token, "/deals/7", "DELETE",
                  headers={"X-ValetKey-Approval": body["approval"]["id"]})  # fmt: skip
    assert replay.status_code == 403 and replay.json()["code"] == "approval_used"
    widened = call(server, token, "/deals/7", "DELETE", headers={"X-ValetKey-Action": "read"})
    assert widened.status_code == 400 and widened.json()["code"] == "invalid_intent"
    elsewhere = call(server, token, "/deals/7", headers={"X-ValetKey-Resource": "crm:deals"})
    assert elsewhere.status_code == 400
    narrower = call(server, token, "/deals/7", headers={"X-ValetKey-Resource": "crm:deals/7/x"})
    assert narrower.status_code == 200
    wrong_audience = httpx.post(server.base_url + "/oauth/token", data={
        "grant_type": "client_credentials", "resource": tenant.crm, "scope": "deals:read"},
        auth=(agent["client_id"], agent["client_secret"])).json()["access_token"]  # fmt: skip
    assert call(server, wrong_audience, "/deals/1").status_code == 401
    assert call(server, "not-a-token", "/deals/1").status_code == 401
    assert len(platform.api_calls) == before + 2


def test_responses_stream_and_redirects_are_not_followed(wired: Any) -> None:
    tenant, _platform, agent = wired
    server = tenant.server
    token = gateway_token(server, agent)
    with httpx.stream("GET", f"{server.base_url}/v1/gateway/crm/big", timeout=30,
                      headers={"Authorization": f"Bearer {token}"}) as streamed:  # fmt: skip
        assert streamed.status_code == 200
        assert "content-length" not in streamed.headers
        body = b"".join(streamed.iter_bytes())
    assert len(body) == BIG_SIZE and body == big_body()
    moved = call(server, token, "/redirect-out")
    assert moved.status_code == 302 and moved.headers["location"] == OFF_BASE_REDIRECT
    clean = call(server, token, "/mail/1?sanitize=html")
    assert clean.status_code == 200
    assert MAIL_VISIBLE in clean.text and MAIL_INJECTION not in clean.text
    assert "display-none=1" in clean.headers["x-valetkey-sanitized"]
    raw = call(server, token, "/mail/1")
    assert MAIL_INJECTION in raw.text and "x-valetkey-sanitized" not in raw.headers


@pytest.mark.parametrize(
    "path",
    [
        "/v1/gateway/crm/../../oauth/token",
        "/v1/gateway/crm/%2e%2e/admin",
        "/v1/gateway/crm/deals%2f..%2fadmin",
        "/v1/gateway/crm//evil.example/x",
        "/v1/gateway/crm/deals/%5c..%5cadmin",
        "/v1/gateway/crm/./deals",
    ],
)
def test_path_escapes_are_refused_with_no_outbound_call(wired: Any, path: str) -> None:
    tenant, platform, agent = wired
    server = tenant.server
    token = gateway_token(server, agent)
    before = len(platform.api_calls)
    parts = urlsplit(server.base_url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    answer = connection.getresponse()
    body = answer.read()
    connection.close()
    assert answer.status == 400, body
    assert b"invalid_path" in body
    assert len(platform.api_calls) == before
    if ".." in path or "%2" in path:  # on the record under the agent's name
        refused = audit_events(server, "--tenant", tenant.name, "--type", "gateway.called")
        assert refused[-1]["data"]["refused"] == "invalid_path"
        assert refused[-1]["agent_id"] == agent["id"] and refused[-1]["outcome"] == "failure"


def test_users_and_tenants_never_reach_each_others_connections(
    server: RunningServer, platform: Platform, idp: FakeIdP
) -> None:
    first, second = make_tenant(server), make_tenant(server)
    for tenant in (first, second):
        add_provider(server, tenant.name, platform)
        server.cli("issuers", "add", idp.issuer, "--tenant", tenant.name, "--jwks-uri",
                   idp.jwks_uri, "--audience", "valetkey")  # fmt: skip
    for email in ("mia@acme.example", "bob@acme.example"):
        server.cli("users", "create", email, "--tenant", first.name)
    agent = gateway_agent(first)
    for email in ("mia@acme.example", "bob@acme.example"):
        server.cli("delegations", "create", "--tenant", first.name, "--user", email,
                   "--agent", agent["id"], "--scope", "crm:read")  # fmt: skip
    import_for(server, first.name, platform, "--user", "bob@acme.example", user="bob@crm")
    import_for(server, first.name, platform, "--agent", agent["id"], user="agent@crm")

    def on_behalf_of(email: str) -> str:
        response = httpx.post(server.base_url + "/oauth/token", data={
            "grant_type": EXCHANGE, "subject_token": idp.assertion(email),
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "resource": f"{server.issuer}/v1/gateway/crm", "scope": "crm:read",
        }, auth=(agent["client_id"], agent["client_secret"]))  # fmt: skip
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    before = len(platform.api_calls)
    for_bob = call(server, on_behalf_of("bob@acme.example"), "/me")
    assert for_bob.status_code == 200 and for_bob.json()["user"] == "bob@crm"
    # Mia has no connection: neither Bob's nor the agent's own is used in her name.
    for_mia = call(server, on_behalf_of("mia@acme.example"), "/me")
    assert for_mia.status_code == 409 and for_mia.json()["code"] == "connection_required"
    assert "/v1/connections/start?provider=crm" in for_mia.json()["detail"]
    # The second tenant's agent, with a token for its own (identically named) gateway.
    stranger = gateway_agent(second)
    foreign = call(server, gateway_token(server, stranger), "/me")
    assert foreign.status_code == 409 and foreign.json()["code"] == "connection_required"
    assert len(platform.api_calls) == before + 1
    assert [c.user for c in platform.api_calls[before:]] == ["bob@crm"]


def test_revoked_connections_and_removed_providers_stop_calls(wired: Any) -> None:
    tenant, _platform, agent = wired
    server = tenant.server
    token = gateway_token(server, agent)
    assert call(server, token, "/deals/1").status_code == 200
    (connection,) = server.cli("connections", "list", "--tenant", tenant.name)
    server.cli("connections", "revoke", connection["id"])
    gone = call(server, token, "/deals/1")
    assert gone.status_code == 409 and gone.json()["code"] == "connection_required"
    server.cli("providers", "remove", "crm", "--tenant", tenant.name)
    removed = call(server, token, "/deals/1")
    assert removed.status_code == 404 and removed.json()["code"] == "unknown_provider"


def test_a_slow_platform_times_out_cleanly(tmp_path: Any, backend: str) -> None:
    from tests.support.databases import new_database_url
    from tests.support.server import running_server

    quirks = Quirks(api_delay=3.0, rotating=False)  # static refresh tokens (Salesforce-like)
    with (
        running_platform(client_secret=SECRET, quirks=quirks) as platform,
        running_server(
            new_database_url(backend, tmp_path), tmp_path / "data", VALETKEY_GATEWAY_TIMEOUT="1"
        ) as server,  # fmt: skip
    ):
        tenant = make_tenant(server)
        add_provider(server, tenant.name, platform)
        agent = gateway_agent(tenant)
        import_for(server, tenant.name, platform, "--agent", agent["id"])
        token = gateway_token(server, agent)
        started = time.monotonic()
        slow = call(server, token, "/deals/1")
        assert slow.status_code == 504 and slow.json()["code"] == "platform_timeout"
        assert time.monotonic() - started < 2.9
        platform.quirks.api_delay = 0
        platform.expire_access_tokens()
        platform.quirks.token_delay = 3.0
        slow_refresh = call(server, token, "/deals/1")
        assert slow_refresh.status_code == 504, slow_refresh.text
        platform.quirks.token_delay = 0
        after = call(server, token, "/deals/1")  # the stored refresh token still works
        assert after.status_code == 200, after.text
        assert platform.successful_refreshes >= 2


def test_preset_quirks_mapped_actions_and_an_instance_api_base(
    tenant: TenantSetup, platform: Platform
) -> None:
    """HubSpot's deal paths map to `crm:deals.*` (registered when the provider is added);
    Salesforce's API base is the org's `instance_url` from the token response."""
    server, name = tenant.server, tenant.name
    server.cli("providers", "add", "crm", "--tenant", name, "--preset", "hubspot",
               "--authorize-url", platform.authorize_url, "--token-url", platform.token_url,
               "--api-base", platform.base, "--client-id", platform.client_id,
               "--client-secret-stdin", input=SECRET + "\n")  # fmt: skip
    actions = {a["name"]: a for a in server.cli("actions", "list", "--tenant", name)}
    assert actions["crm:deals.read"]["class"] == "read"
    assert actions["crm:deals.read"]["scope"] == "crm:read"
    assert actions["crm:deals.delete"]["scope"] == "crm:delete"
    agent = gateway_agent(tenant)
    import_for(server, name, platform, "--agent", agent["id"])
    token = gateway_token(server, agent)
    mapped = call(server, token, "/api/echo")
    assert mapped.status_code == 200
    held = call(server, token, "/crm/v3/objects/deals/42", "DELETE")
    assert held.json()["code"] == "approval_required"
    (decision,) = [e for e in audit_events(server, "--tenant", name, "--type", "decision.made")
                   if e["data"]["decision"] == "approval_required"]  # fmt: skip
    assert decision["data"]["intent"]["action"] == "crm:deals.delete"
    assert decision["data"]["intent"]["resource"] == "crm:deals/42"

    platform.quirks.instance_url = platform.base + "/api"
    server.cli("providers", "add", "sf", "--tenant", name, "--preset", "salesforce",
               "--authorize-url", platform.authorize_url, "--token-url", platform.token_url,
               "--revoke-url", platform.revoke_url, "--client-id", platform.client_id,
               "--client-secret-stdin", input=SECRET + "\n")  # fmt: skip
    sf_agent = tenant.new_agent("sf-bot", "sf:read")
    refresh = platform.issue_refresh_token("org-user")
    server.cli("connections", "import", "--tenant", name, "--provider", "sf", "--agent",
               sf_agent["id"], "--refresh-token-stdin", input=refresh + "\n")  # fmt: skip
    sf_token = httpx.post(server.base_url + "/oauth/token", data={
        "grant_type": "client_credentials", "resource": f"{server.issuer}/v1/gateway/sf",
        "scope": "sf:read"}, auth=(sf_agent["client_id"], sf_agent["client_secret"]))  # fmt: skip
    bearer = {"Authorization": f"Bearer {sf_token.json()['access_token']}"}
    through = httpx.get(f"{server.base_url}/v1/gateway/sf/deals/5", timeout=30, headers=bearer)
    assert through.status_code == 200, through.text
    assert through.json()["owner"] == "org-user"
    assert platform.api_calls[-1].path == "/api/deals/5"


def test_fuzzed_gateway_calls_never_error_out(wired: Any) -> None:
    """With a valid token and a live connection: random paths, methods and intent headers
    get the platform's answer or a clean refusal, never a 500; a refused path never leaves."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    tenant, platform, agent = wired
    server = tenant.server
    token = gateway_token(server, agent, "crm:read crm:write")
    parts = urlsplit(server.base_url)
    segment = st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=12)

    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "HEAD", "TRACE", "OPTIONS"]),
        path=st.lists(segment, max_size=4).map("/".join),
        action=st.none() | st.sampled_from(["read", "write", "crm:deals.read", "x y", ""]),
        resource=st.none() | segment,
    )
    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    def fuzz(method: str, path: str, action: str | None, resource: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        if action is not None:
            headers["X-ValetKey-Action"] = action
        if resource is not None:
            headers["X-ValetKey-Resource"] = resource
        before = len(platform.api_calls)
        target = "/v1/gateway/crm/" + "".join(c if c not in " #?" else "%20" for c in path)
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        try:
            connection.request(method, target, headers=headers)
            answer = connection.getresponse()
            body = answer.read()
        finally:
            connection.close()
        passed_through = len(platform.api_calls) > before  # then the status is the platform's
        assert passed_through or answer.status < 500, (method, target, answer.status, body)
        assert b"server_error" not in body
        if answer.status in (400, 403):
            assert not passed_through, (method, target)

    fuzz()
    assert "unhandled error" not in server.log()


def test_provider_options_and_refreshing_idle_connections(
    tenant: TenantSetup, platform: Platform
) -> None:
    server, name = tenant.server, tenant.name
    platform.quirks.rotating = False
    server.cli("providers", "add", "crm", "--tenant", name,
               "--authorize-url", platform.authorize_url, "--token-url",
               platform.token_url, "--api-base", platform.api_base,
               "--client-id", platform.client_id, "--client-secret-stdin",
               "--token-auth-method", "client_secret_post", "--no-pkce",
               "--extra-param", "audience=crm", "--static-refresh",
               "--refresh-before", "1m", "--refresh-every", "2s",
               "--action", "GET /deals/{id} crm:deals.read crm:deals/{id}",
               input=SECRET + "\n")  # fmt: skip
    config = server.cli("providers", "show", "crm", "--tenant", name)
    assert config["token_auth_method"] == "client_secret_post" and config["pkce"] is False
    assert config["extra_authorize_params"] == {"audience": "crm"}
    assert config["refresh"] == {"rotating": False, "before_expiry": 60,
                                 "at_least_every_hours": 2 / 3600}  # fmt: skip
    assert config["actions"][0]["action"] == "crm:deals.read"
    agent = gateway_agent(tenant)
    connection = import_for(server, name, platform, "--agent", agent["id"])
    server.cli("connections", "refresh", connection["id"])
    assert platform.refresh_grants == 1
    assert server.cli("connections", "refresh", "--due")["refreshed"] == 0
    time.sleep(2.2)
    assert server.cli("connections", "refresh", "--due")["refreshed"] == 1
    assert platform.refresh_grants == 2
    token = gateway_token(server, agent)
    assert call(server, token, "/deals/7").status_code == 200
    assert platform.refresh_grants == 2  # the idle refresh left a fresh token
    (decision,) = audit_events(server, "--tenant", name, "--type", "decision.made")
    assert decision["data"]["intent"] == {"action": "crm:deals.read", "resource": "crm:deals/7",
                                          "context": {"channel": "gateway"}}  # fmt: skip


def test_a_dpop_bound_agent_calls_with_its_proof(wired: Any) -> None:
    """The gateway authenticates DPoP like every `/v1` endpoint: the proof's `htm`/`htu`
    name this very call (its path, without the query), `ath` the token; the platform
    never sees the proof."""
    tenant, platform, agent = wired
    server = tenant.server
    client = DPoPClient(server)
    issued = client.post({"grant_type": "client_credentials", "scope": "crm:read",
                          "resource": f"{server.issuer}/v1/gateway/crm"},
                         (agent["client_id"], agent["client_secret"]))  # fmt: skip
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
    htu = f"{server.issuer}/v1/gateway/crm/deals/3"

    def get(scheme: str, proof: str | None) -> httpx.Response:
        headers = {"Authorization": f"{scheme} {token}"}
        if proof is not None:
            headers["DPoP"] = proof
        return call(server, token, "/deals/3?x=1", headers=headers)

    good = get("DPoP", client.key.proof(htu, htm="GET", claims={"ath": ath}))
    assert good.status_code == 200, good.text
    assert "dpop" not in platform.api_calls[-1].headers
    before = len(platform.api_calls)
    assert get("Bearer", None).status_code == 401
    elsewhere = client.key.proof(htu + "/other", htm="GET", claims={"ath": ath})
    assert get("DPoP", elsewhere).status_code == 401
    assert get("DPoP", client.key.proof(htu, claims={"ath": ath})).status_code == 401  # POST
    assert get("DPoP", ProofKey().proof(htu, htm="GET", claims={"ath": ath})).status_code == 401
    assert len(platform.api_calls) == before
