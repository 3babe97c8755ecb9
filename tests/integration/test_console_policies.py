"""The console's Policies page (admins): the active policy and its history, inline validation
errors, push, rollback, "try an intent", CSRF, roles and tenant isolation."""

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TenantSetup
from tests.integration.helpers import access_token, add_crm_actions, make_tenant
from tests.support import console

POLICIES = Path(__file__).resolve().parents[1] / "policies"
PAGE = "/console/policies"
BROKEN = """\
@id("allow-read-write")
permit(principal, action in [Action::"read", Action::"write"], resource);

@id("typo-rule")
forbid(principal, action, resource)
when { context.approved + 1 };
"""
UNPARSABLE = '@id("fine")\npermit(principal, action, resource);\n\npermit(principal action);\n'


@contextmanager
def sign_in(tenant: TenantSetup, email: str = "sam@acme.example") -> Iterator[httpx.Client]:
    with console.signed_in(tenant, email, PAGE) as client:
        yield client


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


@pytest.fixture
def admin(tenant: TenantSetup) -> Iterator[httpx.Client]:
    server, name = tenant.server, tenant.name
    add_crm_actions(tenant)
    server.cli("actions", "add", "crm:deals.export", "--tenant", name, "--class", "bulk")
    server.cli("actions", "add", "mail.send", "--tenant", name, "--class", "send")
    with sign_in(tenant) as client:
        yield client


def _page(client: httpx.Client) -> str:
    response = client.get(PAGE)
    assert response.status_code == 200, response.text
    return response.text


def _post(client: httpx.Client, path: str, **fields: str) -> httpx.Response:
    return client.post(path, data={"csrf": _csrf(_page(client)), **fields})


def _history(tenant: TenantSetup) -> list[dict[str, Any]]:
    return list(tenant.server.cli("policies", "history", "--tenant", tenant.name))


def _push(client: httpx.Client, text: str, note: str = "") -> httpx.Response:
    return _post(client, PAGE, text=text, note=note, op="push")


def _try(client: httpx.Client, **fields: str) -> httpx.Response:
    return _post(client, PAGE + "/try", **fields)


def _textarea(page: str, ident: str) -> str:
    """What a browser shows in the textarea `ident` (the one leading newline is dropped)."""
    found = re.search(rf'<textarea id="{ident}"[^>]*>\n?(.*?)</textarea>', page, re.S)
    assert found, page
    return html.unescape(found.group(1))


def _decision(page: str) -> str:
    found = re.search(r'<h3 id="try-result-heading">Decision: <span class="badge \w+">([\w ]+)<',
                      page)  # fmt: skip
    assert found, page
    return found.group(1)


def _determining(page: str) -> list[str]:
    block = re.search(r'<ul class="plain" id="try-policies">(.*?)</ul>', page, re.S)
    return re.findall(r"<code>([^<]+)</code>", block.group(1)) if block else []


def test_the_page_shows_the_defaults_then_the_pushed_version(
    tenant: TenantSetup, admin: httpx.Client
) -> None:
    first = admin.get(PAGE)
    assert first.status_code == 200
    assert "script-src 'self'" in first.headers["content-security-policy"]
    assert "default policies apply" in first.text
    assert "No version saved yet." in first.text
    default = tenant.server.cli("policies", "show", "--tenant", tenant.name)
    assert _textarea(first.text, "policy-text") == default["text"]
    text = (POLICIES / "tenant.cedar").read_text()
    pushed = _push(admin, text, note="our own rules")
    assert pushed.status_code == 303
    assert pushed.headers["location"] == PAGE + "?done=pushed"
    page = admin.get(pushed.headers["location"]).text
    assert "Saved as a new version and active now." in page
    assert "default policies apply" not in page
    assert "our own rules" in page and "at-most-20-deletes-an-hour" in page
    assert [(v["version"], v["active"], v["note"]) for v in _history(tenant)] == [
        (1, True, "our own rules")
    ]
    assert tenant.server.cli("policies", "show", "--tenant", tenant.name)["text"] == text


def test_a_browser_posts_crlf_line_ends(tenant: TenantSetup, admin: httpx.Client) -> None:
    text = (POLICIES / "send_allowed.cedar").read_text()
    assert _push(admin, text.replace("\n", "\r\n")).status_code == 303
    assert tenant.server.cli("policies", "show", "--tenant", tenant.name)["text"] == text


def test_an_invalid_policy_shows_its_errors_inline_and_pushes_nothing(
    tenant: TenantSetup, admin: httpx.Client
) -> None:
    assert _push(admin, (POLICIES / "send_allowed.cedar").read_text()).status_code == 303
    before = _history(tenant)
    refused = _push(admin, BROKEN, note="should not land")
    assert refused.status_code == 400
    page = refused.text
    assert 'id="policy-errors"' in page and 'aria-invalid="true"' in page
    assert 'aria-describedby="policy-help policy-errors"' in page
    # each error as the service reports it, with the policy's @id and its line
    assert "<code>typo-rule</code> (policy1), line 4:" in page
    assert html.escape("[policy1] for policy `policy1`", quote=False) in page
    assert "Nothing was saved." in page
    # the submitted text is kept in the editor
    assert _textarea(page, "policy-text") == BROKEN
    assert 'value="should not land"' in page
    assert _history(tenant) == before
    unparsable = _push(admin, UNPARSABLE)
    assert unparsable.status_code == 400
    assert "<strong>Line 4:</strong> does not parse:" in unparsable.text
    assert _history(tenant) == before


def test_validate_only_saves_nothing(tenant: TenantSetup, admin: httpx.Client) -> None:
    text = (POLICIES / "tenant.cedar").read_text()
    checked = _post(admin, PAGE, text=text, note="", op="validate")
    assert checked.status_code == 200
    assert 'id="policy-valid"' in checked.text and "It is not saved yet." in checked.text
    assert _textarea(checked.text, "policy-text") == text
    broken = _post(admin, PAGE, text=BROKEN, note="", op="validate")
    assert broken.status_code == 400 and "typo-rule" in broken.text
    assert _history(tenant) == []


def test_a_pushed_policy_changes_the_decisions(tenant: TenantSetup, admin: httpx.Client) -> None:
    token = access_token(tenant)

    def decide() -> dict[str, Any]:
        response = httpx.post(tenant.server.base_url + "/v1/authorize",
                              json={"action": "mail.send", "resource": "mail:outbox/1"},
                              headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
        assert response.status_code == 200, response.text
        return dict(response.json())

    assert decide()["decision"] == "approval_required"
    tried = _try(admin, action="mail.send", resource="mail:outbox/1")
    assert _decision(tried.text) == "approval required"
    assert _push(admin, (POLICIES / "send_allowed.cedar").read_text()).status_code == 303
    allowed = decide()
    assert allowed["decision"] == "allow" and allowed["policies"] == ["allow-send"]
    tried = _try(admin, action="mail.send", resource="mail:outbox/1")
    assert _decision(tried.text) == "allow" and _determining(tried.text) == ["allow-send"]
    assert "version 1" in tried.text


def test_rollback(tenant: TenantSetup, admin: httpx.Client) -> None:
    first = (POLICIES / "tenant.cedar").read_text()
    assert _push(admin, first, note="first").status_code == 303
    assert _push(admin, (POLICIES / "send_allowed.cedar").read_text()).status_code == 303
    assert [v["active"] for v in _history(tenant)] == [True, False]
    page = _page(admin)
    assert 'action="/console/policies/versions/1/rollback"' in page
    assert 'action="/console/policies/versions/2/rollback"' not in page
    shown = admin.get(PAGE + "/versions/1")
    assert shown.status_code == 200
    assert "readonly" in shown.text and _textarea(shown.text, "version-text") == first
    back = _post(admin, PAGE + "/versions/1/rollback")
    assert back.status_code == 303 and back.headers["location"] == PAGE + "?done=rolled-back"
    assert "Rolled back. That version is active now." in admin.get(back.headers["location"]).text
    assert [(v["version"], v["active"]) for v in _history(tenant)] == [(2, False), (1, True)]
    tried = _try(admin, action="mail.send", resource="mail:outbox/1")
    assert _decision(tried.text) == "approval required"
    assert admin.get(PAGE + "/versions/9").status_code == 404
    assert _post(admin, PAGE + "/versions/9/rollback").status_code == 404
    assert admin.get(PAGE + "/versions/nope").status_code in (400, 404, 422)


def test_try_an_intent(tenant: TenantSetup, admin: httpx.Client) -> None:
    allowed = _try(admin, action="crm:deals.read", resource="crm:deals/1")
    assert allowed.status_code == 200
    assert _decision(allowed.text) == "allow"
    assert _determining(allowed.text) == ["allow-read-write"]
    assert "ValetKey&#39;s default policies" in allowed.text
    asks = _try(admin, action="crm:deals.delete", resource="crm:deals/1",
                user="sam@acme.example")  # fmt: skip
    assert _decision(asks.text) == "approval required"
    assert _determining(asks.text) == ["approval-for-risky-classes"]
    assert "A human must approve this." in asks.text
    unknown = _try(admin, action="crm:deals.nuke", resource="crm:deals/1")
    assert _decision(unknown.text) == "deny" and "unknown_action" in unknown.text
    narrow = _try(admin, agent=tenant.agent["client_id"], action="crm:deals.delete",
                  resource="crm:deals/1")  # fmt: skip
    assert _decision(narrow.text) == "deny" and "insufficient_scope" in narrow.text
    assert f'value="{tenant.agent["client_id"]}" selected' in narrow.text
    # a deny decided by a policy names it
    assert _push(admin, (POLICIES / "tenant.cedar").read_text()).status_code == 303
    denied = _try(admin, action="crm:deals.export", resource="crm:deals/*",
                  context='{"environment": "production"}')  # fmt: skip
    assert _decision(denied.text) == "deny"
    assert "no-bulk-in-production" in _determining(denied.text)
    # the draft in the editor instead of the active version
    draft = (POLICIES / "send_allowed.cedar").read_text()
    on_draft = _try(admin, action="mail.send", resource="mail:outbox/1", text=draft, draft="on")
    assert _decision(on_draft.text) == "allow" and _determining(on_draft.text) == ["allow-send"]
    assert "the text in the editor" in on_draft.text
    assert _textarea(on_draft.text, "policy-text") == draft  # the editor keeps the draft
    on_active = _try(admin, action="mail.send", resource="mail:outbox/1", text=draft)
    assert _decision(on_active.text) == "approval required"
    assert len(_history(tenant)) == 1  # trying pushes nothing


def test_try_an_intent_shows_bad_input_inline(tenant: TenantSetup, admin: httpx.Client) -> None:
    cases = [
        ({"context": "{not json"}, "context", "The context is not JSON"),
        ({"context": "[1, 2]"}, "context", "The context is a JSON object"),
        ({"agent": "agt_nobody"}, "agent", "There is no such agent"),
        ({"user": "nobody@acme.example"}, "user", "There is no user with this email"),
        ({"user": "not an email"}, "user", "There is no user with this email"),
        ({"action": ""}, "action", "Enter an action"),
        ({"action": "NOT AN ACTION!"}, "action", "action is a name"),
        ({"resource": ""}, "resource", "Enter the resource"),
        ({"text": BROKEN, "draft": "on"}, "draft", "does not validate"),
    ]
    for change, name, message in cases:
        fields = {"action": "crm:deals.read", "resource": "crm:deals/1", **change}
        response = _try(admin, **fields)
        assert response.status_code == 400, (change, response.status_code)
        page = response.text
        assert f'<p class="error" id="try-{name}-error">' in page, change
        assert message in page, change
        assert re.search(rf'id="try-{name}"[^>]*aria-describedby="[^"]*try-{name}-error"', page)
        assert re.search(rf'id="try-{name}"[^>]*aria-invalid="true"', page), change
        assert 'id="try-result"' not in page
    other = make_tenant(tenant.server)  # another tenant's agent is unknown here
    response = _try(admin, agent=other.agent["client_id"], action="read", resource="x")
    assert response.status_code == 400 and "There is no such agent" in response.text


def test_forms_need_the_csrf_token(tenant: TenantSetup, admin: httpx.Client) -> None:
    text = (POLICIES / "send_allowed.cedar").read_text()
    assert _push(admin, text).status_code == 303
    assert _push(admin, text).status_code == 303
    for path, fields in ((PAGE, {"text": text, "op": "push"}),
                         (PAGE + "/try", {"action": "read", "resource": "x"}),
                         (PAGE + "/versions/1/rollback", {})):  # fmt: skip
        assert admin.post(path, data=fields).status_code == 403, path
        assert admin.post(path, data={**fields, "csrf": "forged"}).status_code == 403, path
        cross = admin.post(path, data={**fields, "csrf": _csrf(_page(admin))},
                           headers={"Sec-Fetch-Site": "cross-site"})  # fmt: skip
        assert cross.status_code == 403, path
    assert [(v["version"], v["active"]) for v in _history(tenant)] == [(2, True), (1, False)]


def test_only_admins(tenant: TenantSetup) -> None:
    server, name = tenant.server, tenant.name
    server.cli("users", "create", "mia@acme.example", "--tenant", name, "--role", "approver")
    with sign_in(tenant, "mia@acme.example") as member:
        assert member.get(PAGE).status_code == 403
        assert member.get(PAGE + "/versions/1").status_code == 403
        approvals = member.get("/console/approvals")
        assert approvals.status_code == 200 and 'href="/console/policies"' not in approvals.text
        csrf = _csrf(approvals.text)
        pushed = member.post(PAGE, data={"csrf": csrf, "text": "", "op": "push"})
        assert pushed.status_code == 403
        tried = member.post(PAGE + "/try", data={"csrf": csrf, "action": "read", "resource": "x"})
        assert tried.status_code == 403
    assert _history(tenant) == []
    with httpx.Client(base_url=server.base_url, timeout=30) as anonymous:
        away = anonymous.get(PAGE)
        assert away.status_code == 303 and away.headers["location"].startswith("/console/login")


def test_another_tenants_admin_never_sees_this_policy(
    tenant: TenantSetup, admin: httpx.Client
) -> None:
    secret = '@id("acme-secret-rule-7f3")\npermit(principal, action in Action::"read", resource);\n'
    assert _push(admin, secret, note="acme private note").status_code == 303
    other = make_tenant(tenant.server)
    with sign_in(other) as intruder:
        page = intruder.get(PAGE)
        assert page.status_code == 200
        assert "acme-secret-rule-7f3" not in page.text and "acme private note" not in page.text
        assert "default policies apply" in page.text
        version = intruder.get(PAGE + "/versions/1")
        assert version.status_code == 404 and "acme-secret-rule-7f3" not in version.text
        csrf = _csrf(page.text)
        assert intruder.post(PAGE + "/versions/1/rollback", data={"csrf": csrf}).status_code == 404
        tried = intruder.post(PAGE + "/try", data={
            "csrf": csrf, "action": "read", "resource": "x"})  # fmt: skip
        assert _determining(tried.text) == ["allow-read-write"]
        # the admin's own session does not carry over to the other tenant's CSRF token
        assert intruder.post(PAGE, data={"csrf": _csrf(_page(admin)), "text": secret,
                                         "op": "push"}).status_code == 403  # fmt: skip
    assert _history(other) == []
    assert [v["note"] for v in _history(tenant)] == ["acme private note"]
