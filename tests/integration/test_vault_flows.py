"""The vault against real OAuth platforms: node-oidc-provider (rotating refresh tokens,
reuse revokes the grant) and the quirky local platform. The connect flow end to end for a
signed-in user (by sign-in token and by the sign-in cookie) and for an agent by an admin;
a platform that revokes on reuse never logs the connection out; and 50 concurrent calls on
an expired token refresh once with two ValetKey processes sharing the database."""

import concurrent.futures
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import TenantSetup
from tests.integration.helpers import audit_events, make_tenant
from tests.integration.test_gateway import (
    SECRET,
    add_provider,
    call,
    gateway_agent,
    gateway_token,
    import_for,
)
from tests.support.databases import new_database_url
from tests.support.idp import FakeIdP, running_idp
from tests.support.login import Browser, authorize
from tests.support.oidc_platform import OidcPlatform, login_and_consent, running_oidc_platform
from tests.support.platform import Platform, running_platform
from tests.support.server import RunningServer, running_server

PASSWORD = "correct horse battery staple"
APP = "https://console.acme.example/cb"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
OIDC_SECRET = "oidc-platform-secret-5c6d"


@pytest.fixture(scope="module")
def oidc(server: RunningServer) -> Iterator[OidcPlatform]:
    with running_oidc_platform("valetkey", OIDC_SECRET,
                               [server.issuer + "/v1/connections/callback"],
                               access_ttl=2) as running:  # fmt: skip
        yield running


@pytest.fixture(scope="module")
def idp() -> Iterator[FakeIdP]:
    with running_idp() as running:
        yield running


def add_oidc_provider(server: RunningServer, tenant: str, oidc: OidcPlatform) -> None:
    server.cli("providers", "add", "crm", "--tenant", tenant,
               "--authorize-url", oidc.authorize_url, "--token-url", oidc.token_url,
               "--revoke-url", oidc.revoke_url, "--api-base", oidc.api_base,
               "--client-id", "valetkey", "--client-secret-stdin",
               "--scope", "openid", "--scope", "offline_access", "--scope", "crm.read",
               input=OIDC_SECRET + "\n")  # fmt: skip


def sign_in_token(tenant: TenantSetup, email: str) -> str:
    """A person's own ValetKey token (sign-in at /oauth/authorize through an app)."""
    server, name = tenant.server, tenant.name
    server.cli("users", "set-password", email, "--tenant", name, input=PASSWORD + "\n")
    app = server.cli("clients", "create", f"console-{email.split('@')[0]}", "--tenant", name,
                     "--redirect-uri", APP)  # fmt: skip
    done = authorize(server.base_url, app["client_id"], APP, email, PASSWORD, consent=False)
    response = httpx.post(server.base_url + "/oauth/token", data={
        "grant_type": "authorization_code", "code": done.code, "redirect_uri": APP,
        "code_verifier": done.verifier}, auth=(app["client_id"], app["client_secret"]))  # fmt: skip
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def delegated(tenant: TenantSetup, idp: FakeIdP, agent: dict[str, Any], email: str) -> str:
    server = tenant.server
    response = httpx.post(server.base_url + "/oauth/token", data={
        "grant_type": EXCHANGE, "subject_token": idp.assertion(email),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "resource": f"{server.issuer}/v1/gateway/crm", "scope": "crm:read",
    }, auth=(agent["client_id"], agent["client_secret"]))  # fmt: skip
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def test_connect_flow_end_to_end_with_node_oidc_provider(
    tenant: TenantSetup, oidc: OidcPlatform, idp: FakeIdP
) -> None:
    server, name = tenant.server, tenant.name
    add_oidc_provider(server, name, oidc)
    server.cli("users", "create", "mia@acme.example", "--tenant", name)
    person = sign_in_token(tenant, "mia@acme.example")
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        start = browser.get(server.base_url + "/v1/connections/start?provider=crm",
                            headers={"Authorization": f"Bearer {person}"})  # fmt: skip
        assert start.status_code == 302, start.text
        sent = parse_qs(urlsplit(start.headers["location"]).query)
        assert sent["code_challenge_method"] == ["S256"] and sent["client_id"] == ["valetkey"]
        assert sent["redirect_uri"] == [server.issuer + "/v1/connections/callback"]
        back = login_and_consent(browser, start.headers["location"], "mia-at-crm")
        # Another browser cannot complete it (no state cookie), and does not spend it.
        with httpx.Client(timeout=30) as elsewhere:
            stolen = elsewhere.get(back)
            assert stolen.status_code == 400 and stolen.json()["code"] == "invalid_state"
        done = browser.get(back, headers={"Accept": "application/json"})
        assert done.status_code == 200, done.text
        connection = done.json()
        replay = browser.get(back)
        assert replay.status_code == 400
    assert connection["status"] == "active" and connection["owner_kind"] == "user"
    assert oidc.stats()["code_grants"] == 1
    # The agent, for Mia, reads through the gateway; the platform sees Mia's grant.
    agent = gateway_agent(tenant)
    server.cli("issuers", "add", idp.issuer, "--tenant", name, "--jwks-uri", idp.jwks_uri,
               "--audience", "valetkey")  # fmt: skip
    server.cli("delegations", "create", "--tenant", name, "--user", "mia@acme.example",
               "--agent", agent["id"], "--scope", "crm:read")  # fmt: skip
    token = delegated(tenant, idp, agent, "mia@acme.example")
    read = call(server, token, "/deals/42")
    assert read.status_code == 200, read.text
    assert read.json()["sub"] == "mia-at-crm" and read.json()["name"] == "Acme renewal"
    seen = oidc.api_log()[-1]["headers"]
    assert seen["x-agent-id"] == agent["id"] and token not in str(seen)
    events = audit_events(server, "--tenant", name, "--type", "connection.connected")
    assert events[0]["data"]["connection_id"] == connection["id"]


def test_rotating_refresh_tokens_never_log_the_connection_out(
    tenant: TenantSetup, oidc: OidcPlatform
) -> None:
    """node-oidc-provider revokes the whole grant when a spent refresh token comes back:
    one racing refresh would log the user out. Access tokens live 2 s here."""
    server, name = tenant.server, tenant.name
    add_oidc_provider(server, name, oidc)
    admin = sign_in_token(tenant, "sam@acme.example")
    agent = gateway_agent(tenant)
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        start = browser.get(
            server.base_url + f"/v1/connections/start?provider=crm&agent={agent['id']}",
            headers={"Authorization": f"Bearer {admin}", "Accept": "application/json"},
        )
        assert start.status_code == 200, start.text
        back = login_and_consent(browser, start.json()["authorize_url"], "crm-bot-account")
        finished = browser.get(back)  # a person's browser: back to the console, done
        assert finished.status_code == 303
        assert finished.headers["location"] == "/console/connections?done=connected"
    token = gateway_token(server, agent, "crm:read")
    before = oidc.stats()
    for _round in range(3):
        time.sleep(2.2)  # the access token has expired
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            codes = list(pool.map(lambda _: call(server, token, "/deals/1").status_code,
                                  range(20)))  # fmt: skip
        assert codes == [200] * 20
    after = oidc.stats()
    assert after["reuse_detected"] == before["reuse_detected"]
    assert after["grants_revoked"] == before["grants_revoked"]
    assert 3 <= after["refresh_grants"] - before["refresh_grants"] <= 4
    (connection,) = server.cli("connections", "list", "--tenant", name)
    assert connection["status"] == "active" and connection["owner"] == agent["id"]


def test_an_agent_cannot_start_a_connection_and_a_member_not_for_an_agent(
    tenant: TenantSetup, platform: Platform
) -> None:
    server, name = tenant.server, tenant.name
    add_provider(server, name, platform)
    agent = gateway_agent(tenant)
    own = gateway_token(server, agent, "crm:read")
    url = server.base_url + "/v1/connections/start?provider=crm"
    assert httpx.get(url, headers={"Authorization": f"Bearer {own}"}).status_code == 403
    assert httpx.get(url).status_code == 401
    server.cli("users", "create", "joe@acme.example", "--tenant", name)
    member = sign_in_token(tenant, "joe@acme.example")
    for_agent = httpx.get(url + f"&agent={agent['id']}",
                          headers={"Authorization": f"Bearer {member}"})  # fmt: skip
    assert for_agent.status_code == 403
    unknown = httpx.get(server.base_url + "/v1/connections/start?provider=nope",
                        headers={"Authorization": f"Bearer {member}"})  # fmt: skip
    assert unknown.status_code == 404
    assert platform.authorize_requests == []


def test_connect_flow_with_the_sign_in_cookie(tenant: TenantSetup, platform: Platform) -> None:
    """The console's way: the browser signed in to ValetKey, then sent to the platform."""
    server, name = tenant.server, tenant.name
    add_provider(server, name, platform)
    server.cli("users", "set-password", "sam@acme.example", "--tenant", name,
               input=PASSWORD + "\n")  # fmt: skip
    client_id = server.cli("clients", "create", "console", "--tenant", name,
                           "--redirect-uri", APP)["client_id"]  # fmt: skip
    browser = Browser(server.base_url)
    try:
        page = browser.open({"response_type": "code", "client_id": client_id,
                             "redirect_uri": APP, "code_challenge": "x" * 43,
                             "code_challenge_method": "S256"})  # fmt: skip
        browser.submit(page, action="login", email="sam@acme.example", password=PASSWORD)
        start = browser.client.get("/v1/connections/start?provider=crm&scope=crm.read")
        assert start.status_code == 302, start.text
        platform.next_user = "sam@crm"
        at_platform = browser.client.get(start.headers["location"])
        assert at_platform.status_code == 302
        done = browser.client.get(at_platform.headers["location"])
        assert done.status_code == 303, done.text
        shown = browser.client.get(done.headers["location"])  # the console says so
        assert shown.status_code == 200 and "Connected." in shown.text
        assert "crm" in shown.text and "active" in shown.text
    finally:
        browser.close()
    (asked,) = platform.authorize_requests
    assert asked["scope"] == "crm.read" and asked["code_challenge_method"] == "S256"
    (connection,) = server.cli("connections", "list", "--tenant", name)
    assert connection["owner"] == "sam@acme.example" and connection["status"] == "active"


@pytest.fixture
def platform() -> Iterator[Platform]:
    with running_platform(client_secret=SECRET) as running:
        yield running


def test_fifty_calls_refresh_once_across_two_processes(
    backend: str, tmp_path_factory: pytest.TempPathFactory, platform: Platform
) -> None:
    tmp = tmp_path_factory.mktemp(f"vault-two-workers-{backend}")
    with running_server(new_database_url(backend, tmp), tmp / "data", workers=2) as server:
        tenant = make_tenant(server)
        add_provider(server, tenant.name, platform)
        agent = gateway_agent(tenant)
        import_for(server, tenant.name, platform, "--agent", agent["id"])
        token = gateway_token(server, agent)
        for expected_refreshes in (1, 2):
            with concurrent.futures.ThreadPoolExecutor(50) as pool:
                codes = list(pool.map(lambda _: call(server, token, "/deals/9").status_code,
                                      range(50)))  # fmt: skip
            assert codes == [200] * 50
            assert platform.refresh_grants == expected_refreshes
            platform.expire_access_tokens()
    assert platform.reuse_detected == 0
