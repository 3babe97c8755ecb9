"""Console sign-in through the tenant's trusted issuer, in Chromium, against a real OpenID
provider (node-oidc-provider): the person clicks the company button, signs in there, and
lands in the console as the ValetKey user the ID token names — and only then."""

from urllib.parse import urlsplit

from playwright.sync_api import Page

from tests.conftest import TenantSetup
from tests.support.browser import chromium
from tests.support.console import person
from tests.support.oidc_platform import running_oidc_platform

SECRET = "console-client-secret-0123456789"


def _company_sign_in(page: Page, base_url: str, tenant: str, account: str) -> None:
    page.goto(f"{base_url}/console/login?tenant={tenant}")
    page.get_by_role("link", name="Sign in with Acme SSO").click()
    page.locator('input[name="login"]').fill(account)  # the provider's own sign-in form
    page.get_by_role("button", name="Sign in and allow").click()
    page.wait_for_url(f"{base_url}/console/**")


def test_people_sign_in_through_the_trusted_issuer(tenant: TenantSetup) -> None:
    server, name = tenant.server, tenant.name
    person(tenant, "mia@acme.example")
    callback = server.issuer + "/console/login/sso/callback"
    with running_oidc_platform("valetkey-console", SECRET, [callback]) as idp:
        server.cli("issuers", "add", idp.issuer, "--tenant", name,
                   "--jwks-uri", idp.issuer + "/jwks", "--claim", "sub")  # fmt: skip
        enabled = server.cli("issuers", "login", idp.issuer, "--tenant", name, "--client-id",
                             "valetkey-console", "--client-secret-stdin", "--label", "Acme SSO",
                             input=SECRET + "\n")  # fmt: skip
        assert enabled["redirect_uri"] == callback
        assert enabled["console_login"] == {"client_id": "valetkey-console", "label": "Acme SSO"}
        assert SECRET not in str(server.cli("issuers", "list", "--tenant", name))
        with chromium() as browser:
            page = browser.new_page()
            _company_sign_in(page, server.base_url, name, "mia@acme.example")
            assert urlsplit(page.url).path == "/console/delegations"
            assert "mia@acme.example" in page.locator("header").inner_text()
            # Somebody the provider knows but this tenant does not: no session.
            stranger = browser.new_context().new_page()
            _company_sign_in(stranger, server.base_url, name, "eve@elsewhere.example")
            assert urlsplit(stranger.url).path == "/console/login"
            assert "not a user of this organization" in stranger.inner_text("main")
            assert not [c for c in stranger.context.cookies() if c["name"] == "vk_session"]
            # A callback URL carried to another browser (no sign-in cookie of its own) fails.
            starter = browser.new_context().new_page()
            starter.route("**/console/login/sso/callback*", lambda route: route.abort())
            with starter.expect_request(lambda r: "/console/login/sso/callback" in r.url) as back:
                starter.goto(f"{server.base_url}/console/login?tenant={name}")
                starter.get_by_role("link", name="Sign in with Acme SSO").click()
                starter.locator('input[name="login"]').fill("mia@acme.example")
                starter.get_by_role("button", name="Sign in and allow").click()
            other = browser.new_context().new_page()
            other.goto(back.value.url)
            assert "began in another browser" in other.inner_text("main")
    events = server.cli("audit", "search", "--tenant", name, "--type", "user.logged_in")
    assert any(e["data"].get("via") == "oidc" for e in events)
