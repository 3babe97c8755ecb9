"""An admin finds one task in the audit log by its correlation id, in Chromium, and its
timeline shows the whole of it: the agent's token, the exchange for the user, the
decisions, the approval asked, granted and used, and the gateway calls."""

import secrets
from typing import Any

import httpx

from tests.conftest import TenantSetup
from tests.integration.test_gateway import SECRET, add_provider, call, import_for
from tests.support.browser import chromium
from tests.support.console import person, sign_in
from tests.support.idp import running_idp
from tests.support.platform import running_platform

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT = "urn:ietf:params:oauth:token-type:jwt"


def test_an_audit_search_by_correlation_id_shows_the_whole_task(tenant: TenantSetup) -> None:
    server, name = tenant.server, tenant.name
    task = "cor_task_" + secrets.token_hex(6)
    traced = {"X-Correlation-Id": task}
    person(tenant, "ada@acme.example", "admin")
    gateway = f"{server.issuer}/v1/gateway/crm"
    with running_platform(client_secret=SECRET) as platform, running_idp() as idp:
        add_provider(server, name, platform)
        agent = tenant.new_agent("crm-bot", "crm:read", "crm:delete", "deals:read")
        server.cli("issuers", "add", idp.issuer, "--tenant", name, "--jwks-uri", idp.jwks_uri,
                   "--audience", "valetkey")  # fmt: skip
        server.cli("delegations", "create", "--tenant", name, "--user", "sam@acme.example",
                   "--agent", agent["id"], "--resource", gateway, "--scope", "crm:read",
                   "--scope", "crm:delete")  # fmt: skip
        import_for(server, name, platform, "--user", "sam@acme.example")
        auth = (agent["client_id"], agent["client_secret"])

        def token(**form: str) -> str:
            response = httpx.post(server.base_url + "/oauth/token", data=form, auth=auth,
                                  headers=traced)  # fmt: skip
            assert response.status_code == 200, response.text
            return str(response.json()["access_token"])

        token(grant_type="client_credentials", resource=tenant.crm, scope="deals:read")
        for_sam = token(grant_type=EXCHANGE, subject_token=idp.assertion("sam@acme.example"),
                        subject_token_type=JWT, resource=gateway,
                        scope="crm:read crm:delete")  # fmt: skip
        assert call(server, for_sam, "/deals/42", headers=traced).status_code == 200
        held = call(server, for_sam, "/deals/42", "DELETE", headers=traced).json()
        approval: dict[str, Any] = held["approval"]
        server.cli("approvals", "approve", approval["id"], "--by", "ada@acme.example")
        done = call(server, for_sam, "/deals/42", "DELETE",
                    headers={**traced, "X-ValetKey-Approval": approval["id"]})  # fmt: skip
        assert done.status_code == 204, done.text
    with chromium() as browser:
        page = browser.new_page()
        sign_in(page, server.base_url, name, "ada@acme.example", "/console/audit")
        page.get_by_label("Correlation id").fill(task)
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**correlation*")
        rows = page.locator("table tbody tr")
        assert rows.count() >= 8
        assert all(task in text for text in rows.all_inner_texts())  # only this task
        page.get_by_role("link", name=task).first.click()
        page.wait_for_url(f"**/console/audit/task/{task}")
        timeline = page.locator("main").inner_text()
        for said in ("got an access token", "to act for sam@acme.example",
                     "ValetKey allowed", "held for a person's approval",
                     "asked a person to approve", "A person approved", "used the approval",
                     "called crm through the gateway: GET /deals/42 → 200",
                     "DELETE /deals/42 → 204"):  # fmt: skip
            assert said in timeline, said
        steps = ("got an access token", "to act for", "asked a person to approve",
                 "A person approved", "used the approval")  # fmt: skip
        order = [timeline.index(s) for s in steps]
        assert order == sorted(order)  # oldest first, in the order it happened
