"""Every console page in Chromium, at a desktop and a phone width, filled with a realistic
tenant: axe-core finds no serious or critical accessibility violation, nothing is wider
than a 375 px phone, and nothing errs in the browser's console. With
VALETKEY_UPDATE_SCREENSHOTS=1 (`make screenshots`) it also refreshes docs/images/."""

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from playwright.sync_api import Browser, ConsoleMessage, Page

from tests.conftest import TenantSetup
from tests.integration.helpers import access_token
from tests.support.browser import chromium
from tests.support.console import person, sign_in
from tests.support.idp import FakeIdP, running_idp
from tests.support.login import pkce_pair

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "tests/support/axe/node_modules/axe-core/axe.min.js"
IMAGES = ROOT / "docs/images"
SIZES = {"desktop": {"width": 1280, "height": 860}, "phone": {"width": 375, "height": 812}}
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
REDIRECT = "http://127.0.0.1:9/callback"
MANDATE = {"type": "mandate", "actions": ["read", "delete"], "locations": ["crm:deals/*"],
           "user_request": "Clean up the duplicate Acme renewal deal"}  # fmt: skip


def _populate(setup: TenantSetup, idp: FakeIdP) -> dict[str, Any]:
    """Agents, people, a delegation with a mandate, decisions of every kind, a pending
    approval, connections, a policy version: what a tenant looks like after a week."""
    server, name = setup.server, setup.name
    for email, role in (("sam@acme.example", None), ("ann@acme.example", "approver"),
                        ("mia@acme.example", "admin")):  # fmt: skip
        if role is None:
            server.cli("users", "set-password", email, "--tenant", name,
                       input="correct horse battery staple\n")  # fmt: skip
        else:
            person(setup, email, role)
    server.cli("issuers", "add", idp.issuer, "--tenant", name, "--jwks-uri", idp.jwks_uri,
               "--audience", "valetkey")  # fmt: skip
    about = "Keeps the CRM tidy: merges and removes duplicate deals"
    ops = setup.new_agent("ops-bot", "deals:read", "deals:write",
                          extra=("--redirect-uri", REDIRECT, "--description", about))  # fmt: skip
    setup.new_agent("report-writer", "deals:read")
    for action, klass in (("crm:deals.read", "read"), ("crm:deals.delete", "delete")):
        server.cli("actions", "add", action, "--tenant", name, "--class", klass,
                   "--scope", "deals:read" if klass == "read" else "deals:write")  # fmt: skip
    server.cli("delegations", "create", "--tenant", name, "--user", "mia@acme.example",
               "--agent", ops["id"], "--resource", setup.crm, "--scope", "deals:read",
               "--scope", "deals:write")  # fmt: skip
    exchanged = httpx.post(server.base_url + "/oauth/token", data={
        "grant_type": EXCHANGE, "subject_token": idp.assertion("mia@acme.example"),
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "resource": setup.crm,
        "scope": "deals:read deals:write", "authorization_details": json.dumps([MANDATE]),
    }, headers={"X-Correlation-Id": "cor_acme_cleanup"},
       auth=(ops["client_id"], ops["client_secret"]))  # fmt: skip
    assert exchanged.status_code == 200, exchanged.text
    delegated = exchanged.json()["access_token"]
    own = access_token(setup)
    for token, action, resource in ((delegated, "crm:deals.read", "crm:deals/42"),
                                    (delegated, "crm:deals.delete", "crm:deals/42"),
                                    (own, "crm:deals.read", "crm:deals/7"),
                                    (own, "crm:deals.delete", "crm:deals/7"),
                                    (delegated, "crm:deals.read", "crm:contacts/3")):  # fmt: skip
        httpx.post(server.base_url + "/v1/authorize", json={"action": action,
                   "resource": resource}, headers={"Authorization": f"Bearer {token}",
                   "X-Correlation-Id": "cor_acme_cleanup"})  # fmt: skip
    server.cli("providers", "add", "crm", "--tenant", name,
               "--authorize-url", "https://crm.example/oauth/authorize",
               "--token-url", "https://crm.example/oauth/token",
               "--api-base", "https://crm.example/api", "--client-id", "vk-client",
               "--client-secret-stdin", input="platform-secret\n")  # fmt: skip
    for owner in (("--user", "mia@acme.example"), ("--agent", ops["id"])):
        server.cli("connections", "import", "--tenant", name, "--provider", "crm", *owner,
                   "--refresh-token-stdin", input="crm-refresh-token\n")  # fmt: skip
    approvals = server.cli("approvals", "list", "--tenant", name)
    verifier, challenge = pkce_pair()
    consent = urlencode({"response_type": "code", "client_id": ops["client_id"],
                         "redirect_uri": REDIRECT, "scope": "deals:read deals:write",
                         "resource": setup.crm, "code_challenge": challenge,
                         "code_challenge_method": "S256", "prompt": "consent",
                         "authorization_details": json.dumps([MANDATE])})  # fmt: skip
    return {"agent": ops, "approval": approvals[0]["id"], "consent": consent, "v": verifier}


def _axe(page: Page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}"
            for v in result["violations"] if v["impact"] in ("serious", "critical")]  # fmt: skip


def _visit(browser: Browser, base: str, tenant: str, email: str | None,
           pages: list[tuple[str, str]]) -> list[str]:  # fmt: skip
    problems: list[str] = []
    for size, viewport in SIZES.items():
        # Bypassing the CSP is what lets the test inject axe; the other tests hold the CSP.
        context = browser.new_context(viewport=viewport, bypass_csp=True)  # type: ignore[arg-type]
        page = context.new_page()
        errors: list[str] = []

        def log(message: ConsoleMessage, seen: list[str] = errors) -> None:
            if message.type == "error":
                seen.append(message.text)

        page.on("console", log)
        if email:
            sign_in(page, base, tenant, email)
        for slug, path in pages:
            response = page.goto(base + path)
            assert response is not None and response.status < 400, path
            page.wait_for_load_state("networkidle")
            problems += [f"{slug} {size}: {v}" for v in _axe(page)]
            wide = page.evaluate("document.documentElement.scrollWidth")
            if size == "phone" and wide > viewport["width"] + 1:
                problems.append(f"{slug} phone: {wide} px wide")
            if os.environ.get("VALETKEY_UPDATE_SCREENSHOTS"):
                IMAGES.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(IMAGES / f"console-{slug}-{size}.png"),
                                full_page=size == "desktop")  # fmt: skip
        problems += [f"browser console {size}: {e}" for e in errors]
        context.close()
    return problems


def test_every_page_is_accessible_and_fits_a_phone(tenant: TenantSetup) -> None:
    assert AXE.exists(), "make test installs axe-core (npm ci --prefix tests/support/axe)"
    with running_idp() as idp:
        data = _populate(tenant, idp)
    base, name, agent = tenant.server.base_url, tenant.name, data["agent"]["id"]
    with chromium() as browser:
        problems = _visit(browser, base, name, None, [("login", "/console/login")])
        problems += _visit(browser, base, name, "mia@acme.example", [
            ("approvals", "/console/approvals"),
            ("approval", f"/console/approvals/{data['approval']}"),
            ("delegations", "/console/delegations"),
            ("connections", "/console/connections"),
            ("agents", "/console/agents"),
            ("agent", f"/console/agents/{agent}"),
            ("agent-suspend", f"/console/agents/{agent}/suspend"),
            ("audit", "/console/audit"),
            ("audit-task", "/console/audit/task/cor_acme_cleanup"),
            ("policies", "/console/policies"),
            ("consent", f"/oauth/authorize?{data['consent']}"),
        ])  # fmt: skip
    assert problems == []
