"""The console in real headless Chromium: what approvers, users and admins do there, and
what an attacker cannot. Playwright's sync API runs its own event loop in the test's
thread, so the in-process CLI (asyncio.run) is done with before a browser starts; agents
act from other threads over plain HTTP meanwhile."""

import threading
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from playwright.sync_api import Browser, Page

from tests.conftest import TenantSetup
from tests.integration.helpers import access_token, add_crm_actions
from tests.support.browser import chromium
from tests.support.console import person, sign_in
from tests.support.login import pkce_pair

REDIRECT = "http://127.0.0.1:9/callback"  # nothing listens: the browser's last request says it


def _ask(setup: TenantSetup, token: str, **intent: Any) -> dict[str, Any]:
    response = httpx.post(setup.server.base_url + "/v1/authorize", json=intent,
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
    assert response.status_code == 200, response.text
    return dict(response.json())


def _phone(browser: Browser) -> Page:
    page = browser.new_page(viewport={"width": 375, "height": 740})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors  # type: ignore[attr-defined]
    return page


def test_an_approver_approves_from_the_live_inbox_and_the_agent_goes_on(
    tenant: TenantSetup,
) -> None:
    server, name = tenant.server, tenant.name
    tenant.agent = tenant.new_agent("ops-bot", "deals:read", "deals:write")
    add_crm_actions(tenant, "crm:deals.delete")
    person(tenant, "ann@acme.example", "approver")
    token = access_token(tenant, scope="deals:write")
    intent = {"action": "crm:deals.delete", "resource": "crm:deals/7",
              "context": {"user_request": "remove the duplicate Acme deal"}}  # fmt: skip
    outcome: dict[str, Any] = {}

    def agent() -> None:
        """Asks, long-polls the approval while a person decides, then calls again with it."""
        asked = _ask(tenant, token, **intent)
        approval = asked["approval"]
        outcome["asked"] = asked["decision"]
        waited = httpx.get(approval["url"], params={"wait": 40}, timeout=60,
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        outcome["waited"] = waited.json()["status"]
        outcome["final"] = _ask(tenant, token, **intent, approval_id=approval["id"])["decision"]

    with chromium() as browser:
        page = _phone(browser)
        sign_in(page, server.base_url, name, "ann@acme.example", "/console/approvals")
        assert page.get_by_text("Nothing waits for a decision.").is_visible()
        page.evaluate("window.stillTheSamePage = true")
        worker = threading.Thread(target=agent)
        worker.start()
        card = page.locator("#pending li.card")
        card.wait_for(timeout=15000)  # appears by itself while the agent's long poll waits
        assert page.evaluate("window.stillTheSamePage") is True  # live, not a reload
        shown = card.inner_text()
        assert "ops-bot" in shown and "delete deals (crm)" in shown and "crm:deals/7" in shown
        assert "left" in shown and "delete" in shown
        assert outcome.get("asked") == "approval_required" and "waited" not in outcome
        card.get_by_label("Reason").fill("duplicate confirmed with Mia")
        card.get_by_role("button", name="Approve").click()
        page.get_by_text("Approved. The agent may now make this one call.").wait_for()
        worker.join(30)
        history = page.locator("table").inner_text()
        assert "approved" in history or "used" in history
        assert "duplicate confirmed with Mia" in history
        assert page.errors == []  # type: ignore[attr-defined]
    assert outcome == {"asked": "approval_required", "waited": "approved", "final": "allow"}


def test_a_user_consents_then_revokes_and_the_agents_tokens_die(tenant: TenantSetup) -> None:
    server, name = tenant.server, tenant.name
    agent = tenant.new_agent("inbox-bot", "deals:read", extra=("--redirect-uri", REDIRECT))
    person(tenant, "mia@acme.example")
    server.cli("roles", "set", "member", "--tenant", name, "--scope", "deals:read")
    verifier, challenge = pkce_pair()
    query = urlencode({"response_type": "code", "client_id": agent["client_id"],
                       "redirect_uri": REDIRECT, "scope": "deals:read", "resource": tenant.crm,
                       "state": "s-1", "code_challenge": challenge,
                       "code_challenge_method": "S256"})  # fmt: skip
    checker = tenant.introspector()
    with chromium() as browser:
        page = _phone(browser)
        page.goto(f"{server.base_url}/oauth/authorize?{query}")
        page.get_by_label("Email").fill("mia@acme.example")
        page.get_by_label("Password").fill("correct horse battery staple")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("text=Allow this agent?")
        with page.expect_request(lambda r: r.url.startswith(REDIRECT)) as redirected:
            page.get_by_role("button", name="Allow").click()
        answer = parse_qs(urlsplit(redirected.value.url).query)
        tokens = httpx.post(server.base_url + "/oauth/token", data={
            "grant_type": "authorization_code", "code": answer["code"][0],
            "redirect_uri": REDIRECT, "code_verifier": verifier,
        }, auth=(agent["client_id"], agent["client_secret"])).json()  # fmt: skip
        assert _introspected(tenant, checker, tokens["access_token"])["active"] is True
        # The same sign-in reaches the console: My delegations shows the grant.
        page.goto(f"{server.base_url}/console/delegations")
        card = page.locator("li.card", has_text="inbox-bot")
        assert "read in deals" in card.inner_text()
        card.get_by_role("button", name="Revoke").click()
        page.get_by_text("Revoked.").wait_for()
        assert page.locator("li.card", has_text="inbox-bot").count() == 0
        assert page.errors == []  # type: ignore[attr-defined]
    assert _introspected(tenant, checker, tokens["access_token"])["active"] is False
    refreshed = httpx.post(server.base_url + "/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
    }, auth=(agent["client_id"], agent["client_secret"]))  # fmt: skip
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


def _introspected(setup: TenantSetup, caller: dict[str, Any], token: str) -> dict[str, Any]:
    response = httpx.post(setup.server.base_url + "/oauth/introspect", data={"token": token},
                          auth=(caller["client_id"], caller["client_secret"]))  # fmt: skip
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_signing_out_ends_the_session_everywhere(tenant: TenantSetup) -> None:
    server, name = tenant.server, tenant.name
    person(tenant, "ann@acme.example", "approver")
    with chromium() as browser:
        first = browser.new_context()
        page = first.new_page()
        sign_in(page, server.base_url, name, "ann@acme.example", "/console/approvals")
        stolen = [c for c in first.cookies() if c["name"] == "vk_session"]
        assert stolen and stolen[0]["httpOnly"] and stolen[0]["sameSite"] == "Lax"
        page.get_by_role("button", name="Sign out").click()
        page.get_by_text("You are signed out.").wait_for()
        other = browser.new_context()
        other.add_cookies(stolen)  # a copy of the cookie taken before the sign-out
        replay = other.new_page()
        replay.goto(f"{server.base_url}/console/approvals")
        assert urlsplit(replay.url).path == "/console/login"


class _Evil:
    """Another site (same host, other port: same-site, cross-origin, so the Lax cookie is
    sent) whose page posts a console form by itself the moment it loads."""

    def __init__(self, action: str, fields: dict[str, str]) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        inputs = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in fields.items())
        body = (f'<!doctype html><form id="f" method="post" action="{action}">{inputs}</form>'
                '<script>document.getElementById("f").submit()</script>').encode()  # fmt: skip

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_forged_forms_and_other_tenants_get_nowhere(tenant: TenantSetup) -> None:
    server, name = tenant.server, tenant.name
    tenant.agent = tenant.new_agent("ops-bot", "deals:read", "deals:write")
    add_crm_actions(tenant, "crm:deals.delete")
    person(tenant, "ann@acme.example", "approver")
    token = access_token(tenant, scope="deals:write")
    approval = _ask(tenant, token, action="crm:deals.delete", resource="crm:deals/9")["approval"]
    other = "t-other-" + name[2:]
    server.cli("tenants", "create", other)
    server.cli("users", "create", "bob@globex.example", "--tenant", other, "--role", "admin")
    server.cli("users", "set-password", "bob@globex.example", "--tenant", other,
               input="correct horse battery staple\n")  # fmt: skip
    target = f"{server.base_url}/console/approvals/{approval['id']}"
    with chromium() as browser:
        victim = browser.new_page()
        sign_in(victim, server.base_url, name, "ann@acme.example", "/console/approvals")
        token_of_victim = victim.locator('input[name="csrf"]').first.get_attribute("value") or ""
        for fields in (
            {"decision": "approve"},  # no token at all
            {"decision": "approve", "csrf": token_of_victim},
        ):  # even a leaked one
            evil = _Evil(target, fields)
            try:
                with victim.expect_response(target) as answered:
                    victim.goto(evil.url)
                assert answered.value.status == 403
            finally:
                evil.close()
        victim.goto(f"{server.base_url}/console/approvals")
        assert victim.locator(f'#pending li[data-id="{approval["id"]}"]').count() == 1
        # Another tenant's admin: the approval, the agent and the decision do not exist.
        intruder = browser.new_page()
        sign_in(intruder, server.base_url, other, "bob@globex.example", "/console/approvals")
        assert approval["id"] not in intruder.content()
        own_token = intruder.locator('input[name="csrf"]').first.get_attribute("value") or ""
        seen = intruder.goto(target)
        assert seen is not None and seen.status == 404
        forged = intruder.request.post(target, form={"decision": "approve", "csrf": own_token})
        assert forged.status == 404
        for path in (f"/console/agents/{tenant.agent['id']}",
                     f"/console/audit/task/{approval['id']}"):  # fmt: skip
            page = intruder.goto(server.base_url + path)
            assert page is not None and page.status in (200, 404)
            assert "ops-bot" not in intruder.content()
    status = httpx.get(approval["url"], headers={"Authorization": f"Bearer {token}"}).json()
    assert status["status"] == "pending"


def test_an_admin_suspends_an_agent_and_its_next_call_is_denied(tenant: TenantSetup) -> None:
    server, name = tenant.server, tenant.name
    add_crm_actions(tenant, "crm:deals.read")
    person(tenant, "ada@acme.example", "admin")
    agent = tenant.agent
    token = access_token(tenant)
    assert _ask(tenant, token, action="crm:deals.read", resource="crm:deals/1")["decision"] == (
        "allow"
    )
    with chromium() as browser:
        page = browser.new_page()
        sign_in(page, server.base_url, name, "ada@acme.example", "/console/agents")
        page.get_by_role("link", name=agent["name"]).first.click()
        page.get_by_role("link", name=f"Suspend {agent['name']}").click()
        assert "/suspend" in page.url  # a confirmation first, nothing done yet
        still = httpx.post(server.base_url + "/v1/authorize", headers={
            "Authorization": f"Bearer {token}"}, json={"action": "crm:deals.read",
            "resource": "crm:deals/1"})  # fmt: skip
        assert still.status_code == 200 and still.json()["decision"] == "allow"
        page.get_by_role("button", name=f"Suspend {agent['name']}").click()
        page.get_by_text("Suspended.").wait_for()
        assert "suspended" in page.locator("main").inner_text()
    refused = httpx.post(server.base_url + "/v1/authorize", headers={
        "Authorization": f"Bearer {token}"}, json={"action": "crm:deals.read",
        "resource": "crm:deals/1"})  # fmt: skip
    assert refused.status_code == 401  # the token it held is dead at once
    again = httpx.post(server.base_url + "/oauth/token", data={
        "grant_type": "client_credentials", "resource": tenant.crm},
        auth=(agent["client_id"], agent["client_secret"]))  # fmt: skip
    assert again.status_code == 401 and again.json()["error"] == "invalid_client"
