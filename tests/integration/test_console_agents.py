"""The console's agents pages: who sees which agent, credentials' metadata (a secret only
once, after a rotation), suspend / resume / decommission behind a confirmation and CSRF,
tenant isolation, and the activity chart drawn from real decisions."""

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.conftest import TenantSetup
from tests.integration.helpers import access_token, add_crm_actions, make_tenant, token_request
from tests.support import console

SVG = "{http://www.w3.org/2000/svg}"


def _hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no hidden {name!r} field"
    return html.unescape(found.group(1))


@contextmanager
def signed_in(setup: TenantSetup, email: str) -> Iterator[httpx.Client]:
    with console.signed_in(setup, email, "/console/agents") as client:
        yield client


def _post(client: httpx.Client, page: httpx.Response, action: str) -> httpx.Response:
    """Submit the page's form for `action` (with the CSRF token the page carries)."""
    assert page.status_code == 200, page.text
    assert f'action="{action}"' in page.text
    return client.post(action, data={"csrf": _hidden(page.text, "csrf")})


def _token_works(setup: TenantSetup, agent: dict[str, Any], secret: str | None = None) -> bool:
    response = token_request(setup.server, agent, setup.crm, secret=secret)
    assert response.status_code in (200, 400, 401), response.text
    return response.status_code == 200


@pytest.fixture
def admin(tenant: TenantSetup) -> Iterator[httpx.Client]:
    with signed_in(tenant, "sam@acme.example") as client:
        yield client


def test_signing_in_is_needed(tenant: TenantSetup) -> None:
    response = httpx.get(tenant.server.base_url + "/console/agents")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/console/login?next=")


def test_the_list_shows_status_sponsor_and_flags(tenant: TenantSetup, admin: httpx.Client) -> None:
    paused = tenant.new_agent("paused-bot", "deals:read")
    tenant.server.cli("agents", "suspend", paused["id"])
    page = admin.get("/console/agents")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    text = page.text
    for agent in (tenant.agent, paused):
        assert f'href="/console/agents/{agent["id"]}"' in text
        assert agent["name"] in text
    assert "sam@acme.example" in text
    assert '<span class="badge ok">active</span>' in text
    assert '<span class="badge bad">suspended</span>' in text
    assert 'class="table-wrap"' in text and '<th scope="col">Sponsor</th>' in text
    assert "needs sponsor" not in text
    assert tenant.agent["client_secret"] not in text
    # a deactivated sponsor leaves the agent flagged
    tenant.server.cli("users", "create", "ex@acme.example", "--tenant", tenant.name)
    orphan = tenant.server.cli("agents", "create", "orphan-bot", "--tenant", tenant.name,
                               "--sponsor", "ex@acme.example")  # fmt: skip
    tenant.server.cli("users", "deactivate", "ex@acme.example", "--tenant", tenant.name)
    text = admin.get("/console/agents").text
    row = text[text.index(orphan["id"]) :].split("</tr>")[0]
    assert "needs sponsor" in row and "(deactivated)" in text


def test_the_agent_page_shows_metadata_never_the_secret(
    tenant: TenantSetup, admin: httpx.Client
) -> None:
    agent = tenant.agent
    page = admin.get(f"/console/agents/{agent['id']}")
    assert page.status_code == 200, page.text
    text = page.text
    assert agent["client_secret"] not in text
    assert "digest" not in text.lower() or "keeps a secret's digest" in text
    assert agent["credentials"]["secrets"][0]["id"] in text
    assert "<code>deals:read</code>: read in deals" in text
    assert "sam@acme.example" in text and "never" in text  # no activity yet
    assert "No limits apply" in text
    # the actions its status allows, for an admin
    for verb in ("suspend", "decommission", "rotate"):
        assert f'href="/console/agents/{agent["id"]}/{verb}"' in text
    assert f'href="/console/agents/{agent["id"]}/resume"' not in text
    # limits: the agent's own and the tenant's defaults
    tenant.server.cli("limits", "set", "--tenant", tenant.name, "--max", "5", "--per", "hour")
    tenant.server.cli("limits", "set", "--tenant", tenant.name, "--agent", agent["id"],
                      "--class", "delete", "--max", "2", "--per", "day")  # fmt: skip
    text = admin.get(f"/console/agents/{agent['id']}").text
    assert "5 per hour" in text and "every agent (tenant default)" in text
    assert "2 per day" in text and "delete actions" in text


def test_rotate_shows_the_new_secret_once(tenant: TenantSetup, admin: httpx.Client) -> None:
    agent = tenant.agent
    confirm = admin.get(f"/console/agents/{agent['id']}/rotate")
    assert "keeps working for 1 day" in confirm.text
    refused = admin.post(f"/console/agents/{agent['id']}/rotate", data={"csrf": "nope"})
    assert refused.status_code == 403
    shown = _post(admin, confirm, f"/console/agents/{agent['id']}/rotate")
    assert shown.status_code == 200, shown.text
    assert shown.headers["cache-control"] == "no-store"
    assert "it will not be shown again" in shown.text
    secret = _hidden_input(shown.text, "client-secret")
    assert secret and secret != agent["client_secret"]
    assert _token_works(tenant, agent, secret)
    assert _token_works(tenant, agent)  # the old one, during its grace period
    again = admin.get(f"/console/agents/{agent['id']}")
    assert secret not in again.text and agent["client_secret"] not in again.text
    assert again.text.count(">sec_") == 2  # both secrets' metadata, one expiring
    assert "left)" in again.text


def _hidden_input(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*value="([^"]*)"', page)
    assert found, page
    return html.unescape(found.group(1))


def test_suspend_and_resume(tenant: TenantSetup, admin: httpx.Client) -> None:
    agent, server = tenant.agent, tenant.server
    token = access_token(tenant)
    page = admin.get(f"/console/agents/{agent['id']}/suspend")
    assert "every token it holds stops working" in page.text
    done = _post(admin, page, f"/console/agents/{agent['id']}/suspend")
    assert done.status_code == 303
    assert done.headers["location"] == f"/console/agents/{agent['id']}?done=suspended"
    after = admin.get(done.headers["location"])
    assert "Suspended. Its tokens stopped working." in after.text
    assert f'href="/console/agents/{agent["id"]}/resume"' in after.text
    assert f'href="/console/agents/{agent["id"]}/suspend"' not in after.text
    assert not _token_works(tenant, agent)
    refused = httpx.post(server.base_url + "/v1/authorize", headers={
        "Authorization": f"Bearer {token}"}, json={"action": "read", "resource": "x"})  # fmt: skip
    assert refused.status_code == 401
    # suspending again is not offered
    assert admin.get(f"/console/agents/{agent['id']}/suspend").status_code == 409
    done = _post(admin, admin.get(f"/console/agents/{agent['id']}/resume"),
                 f"/console/agents/{agent['id']}/resume")  # fmt: skip
    assert done.headers["location"].endswith("?done=resumed")
    assert _token_works(tenant, agent)
    assert server.cli("agents", "show", agent["id"])["status"] == "active"


def test_decommission_is_final(tenant: TenantSetup, admin: httpx.Client) -> None:
    agent = tenant.agent
    page = admin.get(f"/console/agents/{agent['id']}/decommission")
    assert "This is final." in page.text
    done = _post(admin, page, f"/console/agents/{agent['id']}/decommission")
    assert done.headers["location"].endswith("?done=decommissioned")
    after = admin.get(done.headers["location"]).text
    assert "destroyed when it was decommissioned" in after
    assert not re.search(rf'href="/console/agents/{agent["id"]}/\w+"', after)
    assert not _token_works(tenant, agent)
    assert admin.get(f"/console/agents/{agent['id']}/resume").status_code == 409


def test_a_form_without_csrf_is_refused(tenant: TenantSetup, admin: httpx.Client) -> None:
    agent = tenant.agent
    for data in ({}, {"csrf": "forged"}):
        refused = admin.post(f"/console/agents/{agent['id']}/suspend", data=data)
        assert refused.status_code == 403
        assert "text/html" in refused.headers["content-type"]
    page = admin.get(f"/console/agents/{agent['id']}/suspend")
    cross = admin.post(f"/console/agents/{agent['id']}/suspend",
                       data={"csrf": _hidden(page.text, "csrf")},
                       headers={"Sec-Fetch-Site": "cross-site"})  # fmt: skip
    assert cross.status_code == 403
    assert tenant.server.cli("agents", "show", agent["id"])["status"] == "active"
    assert _token_works(tenant, agent)


def test_another_tenants_admin_gets_404(tenant: TenantSetup) -> None:
    other = make_tenant(tenant.server)
    agent = tenant.agent
    with signed_in(other, "sam@acme.example") as theirs:
        listed = theirs.get("/console/agents")
        assert listed.status_code == 200 and agent["id"] not in listed.text
        assert other.agent["id"] in listed.text
        for path in ("", "/suspend", "/rotate"):
            assert theirs.get(f"/console/agents/{agent['id']}{path}").status_code == 404
        csrf = _hidden(listed.text, "csrf")
        for verb in ("suspend", "decommission", "rotate"):
            response = theirs.post(f"/console/agents/{agent['id']}/{verb}", data={"csrf": csrf})
            assert response.status_code == 404
        assert theirs.get("/console/agents/agt_nothing").status_code == 404
    assert _token_works(tenant, agent)


def test_a_member_sees_no_agent_and_a_sponsor_sees_their_own(tenant: TenantSetup) -> None:
    server, name = tenant.server, tenant.name
    server.cli("users", "create", "mo@acme.example", "--tenant", name)
    with signed_in(tenant, "mo@acme.example") as member:
        listed = member.get("/console/agents")
        assert listed.status_code == 200 and "You sponsor no agent" in listed.text
        assert tenant.agent["id"] not in listed.text
        assert member.get(f"/console/agents/{tenant.agent['id']}").status_code == 403
        assert member.get(f"/console/agents/{tenant.agent['id']}/suspend").status_code == 403
    server.cli("users", "create", "sue@acme.example", "--tenant", name)
    mine = server.cli("agents", "create", "sue-bot", "--tenant", name, "--sponsor",
                      "sue@acme.example", "--scope", "deals:read")  # fmt: skip
    with signed_in(tenant, "sue@acme.example") as sponsor:
        listed = sponsor.get("/console/agents")
        assert listed.status_code == 200
        assert mine["id"] in listed.text and tenant.agent["id"] not in listed.text
        assert sponsor.get(f"/console/agents/{tenant.agent['id']}").status_code == 403
        page = sponsor.get(f"/console/agents/{mine['id']}")
        assert f'href="/console/agents/{mine["id"]}/suspend"' in page.text
        assert "/decommission" not in page.text and "/rotate" not in page.text
        assert sponsor.get(f"/console/agents/{mine['id']}/decommission").status_code == 403
        csrf = _hidden(page.text, "csrf")
        for verb in ("decommission", "rotate"):
            response = sponsor.post(f"/console/agents/{mine['id']}/{verb}", data={"csrf": csrf})
            assert response.status_code == 403
        # suspending is the sponsor's safety brake
        done = _post(sponsor, sponsor.get(f"/console/agents/{mine['id']}/suspend"),
                     f"/console/agents/{mine['id']}/suspend")  # fmt: skip
        assert done.status_code == 303
        assert not _token_works(tenant, mine)
        # ... but releasing it, perhaps in the middle of an incident, is an admin's call
        suspended = sponsor.get(f"/console/agents/{mine['id']}")
        assert "/resume" not in suspended.text
        refused = sponsor.post(f"/console/agents/{mine['id']}/resume",
                               data={"csrf": _hidden(suspended.text, "csrf")})  # fmt: skip
        assert refused.status_code == 403 and not _token_works(tenant, mine)


def test_the_chart_shows_the_decisions_made(tenant: TenantSetup, admin: httpx.Client) -> None:
    server = tenant.server
    bot = tenant.new_agent("ops-bot", "deals:read", "deals:write")
    add_crm_actions(tenant)
    token = access_token(tenant, bot)
    verdicts = []
    for action, resource in (("crm:deals.read", "crm:deals/1"), ("crm:deals.read", "crm:deals/2"),
                             ("crm:deals.nuke", "crm:deals/1"),
                             ("crm:deals.delete", "crm:deals/7")):  # fmt: skip
        response = httpx.post(server.base_url + "/v1/authorize", timeout=30,
                              json={"action": action, "resource": resource},
                              headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert response.status_code == 200, response.text
        verdicts.append(response.json()["decision"])
    assert verdicts == ["allow", "allow", "deny", "approval_required"]
    page = admin.get(f"/console/agents/{bot['id']}")
    assert page.status_code == 200
    text = page.text
    svg = text[text.index("<svg") : text.index("</svg>") + len("</svg>")]
    root = ET.fromstring(svg)
    assert root.get("role") == "img" and root.get("aria-labelledby")
    bars = [r.get("class") for r in root.iter(SVG + "rect")]
    assert sorted(bars) == ["allowed", "approvals", "denied"]  # one hour, stacked
    desc = root.findtext(SVG + "desc") or ""
    assert "2 allowed, 1 denied, 1 approval requests" in desc
    assert "style=" not in svg
    assert '<span class="swatch allowed" aria-hidden="true"></span>Allowed' in text
    table = text[text.index("<details>") : text.index("</details>")]
    assert re.search(r"<td>2</td><td>1</td><td>1</td>", table), table
    # recent decisions, newest first
    recent = text[text.index("Recent decisions") :]
    assert recent.index("crm:deals.delete") < recent.index("crm:deals.nuke")
    assert "approval required" in recent and "crm:deals/7" in recent
    listed = admin.get("/console/agents").text
    row = listed[listed.index(bot["id"]) :].split("</tr>")[0]
    assert "ago" in row and "never" not in row
