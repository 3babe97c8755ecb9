"""The consent screen in a real browser: a person signs in at `/oauth/authorize`, reads
what the agent asks for, allows it, and the agent gets its code — the page's security
headers hold in Chromium (no inline script ran, no frame) and nothing errs in its console."""

from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from playwright.sync_api import Browser, Request

from tests.conftest import TenantSetup
from tests.support.browser import chromium
from tests.support.login import pkce_pair
from tests.support.server import RunningServer

PASSWORD = "correct horse battery staple"
REDIRECT = "http://127.0.0.1:9/callback"  # nothing listens: the browser's last request says it


def test_a_user_consents_to_an_agent_in_chromium(tenant: TenantSetup) -> None:
    server, name = tenant.server, tenant.name
    agent = tenant.new_agent("inbox-bot", "deals:read", extra=("--redirect-uri", REDIRECT))
    server.cli("users", "create", "mia@acme.example", "--tenant", name)
    server.cli("users", "set-password", "mia@acme.example", "--tenant", name,
               input=PASSWORD + "\n")  # fmt: skip
    server.cli("roles", "set", "member", "--tenant", name, "--scope", "deals:read")
    verifier, challenge = pkce_pair()
    query = urlencode({"response_type": "code", "client_id": agent["client_id"],
                       "redirect_uri": REDIRECT, "scope": "deals:read", "resource": tenant.crm,
                       "state": "s-123", "code_challenge": challenge,
                       "code_challenge_method": "S256"})  # fmt: skip
    # Playwright's sync API runs its own event loop in this thread: the in-process CLI
    # (asyncio.run) is done with before the browser starts.
    with chromium() as browser:
        _consent(server, agent, query, verifier, browser)


def _consent(server: RunningServer, agent: dict[str, Any], query: str, verifier: str,
             browser: Browser) -> None:  # fmt: skip
    page = browser.new_page(viewport={"width": 375, "height": 740})  # an approver's phone
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r))
    response = page.goto(f"{server.base_url}/oauth/authorize?{query}")
    assert response is not None and response.status == 200
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    page.get_by_label("Email").fill("mia@acme.example")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("text=Allow this agent?")
    shown = page.inner_text("body")
    assert "inbox-bot" in shown and "deals:read" in shown and agent["id"] in shown
    with page.expect_request(lambda r: r.url.startswith(REDIRECT)) as redirected:
        page.get_by_role("button", name="Allow").click()
    answer = {k: v[0] for k, v in parse_qs(urlsplit(redirected.value.url).query).items()}
    assert answer["state"] == "s-123" and answer["iss"] == server.issuer
    token = httpx.post(server.base_url + "/oauth/token", data={
        "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": REDIRECT,
        "code_verifier": verifier}, auth=(agent["client_id"], agent["client_secret"]))  # fmt: skip
    assert token.status_code == 200, token.text
    assert token.json()["scope"] == "deals:read"
    assert not [e for e in errors if "Content Security Policy" in e], errors
    assert all(urlsplit(r.url).hostname == "127.0.0.1" for r in sent)  # nothing fetched elsewhere
    page.close()
