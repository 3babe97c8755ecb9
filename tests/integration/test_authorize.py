"""ValetKey's own sign-in and consent (`/oauth/authorize`, code + PKCE) and the delegated
session it starts: refresh rotation, reuse detection, and revocation that reaches it."""

import concurrent.futures
import warnings
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest

from tests.conftest import TenantSetup
from tests.support.dpop import DPoPClient

with warnings.catch_warnings():
    # authlib >= 1.9 prefers the `httpx2` package and warns when it falls back to httpx.
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.common.security import generate_token
    from authlib.integrations.httpx_client import OAuth2Client

from tests.support.login import Authorization, Browser, answer, authorize, pkce_pair

PASSWORD = "correct horse battery staple"
REDIRECT = "http://127.0.0.1:8765/callback"
APP_REDIRECT = "https://app.acme.example/cb"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"


@pytest.fixture
def setup(tenant: TenantSetup) -> TenantSetup:
    server, name = tenant.server, tenant.name
    server.cli("users", "create", "mia@acme.example", "--tenant", name)
    for email in ("mia@acme.example", "sam@acme.example"):
        server.cli("users", "set-password", email, "--tenant", name, input=PASSWORD + "\n")
    tenant.agent = tenant.new_agent(
        "helper", "deals:read", "deals:write", extra=("--redirect-uri", REDIRECT)
    )
    return tenant


def _token(setup: TenantSetup, client: dict[str, Any], **form: str) -> httpx.Response:
    return httpx.post(
        setup.server.base_url + "/oauth/token",
        data=form,
        auth=(client["client_id"], client["client_secret"]),
    )


def _redeem(
    setup: TenantSetup,
    code: str,
    verifier: str,
    redirect: str = REDIRECT,
    client: dict[str, Any] | None = None,
) -> httpx.Response:
    return _token(
        setup,
        client or setup.agent,
        grant_type="authorization_code",
        code=code,
        redirect_uri=redirect,
        code_verifier=verifier,
    )


def _refresh(setup: TenantSetup, token: str) -> httpx.Response:
    return _token(setup, setup.agent, grant_type="refresh_token", refresh_token=token)


def _claims(setup: TenantSetup, token: str, audience: str) -> dict[str, Any]:
    keys = jwt.PyJWKClient(setup.server.base_url + "/jwks")
    return dict(
        jwt.decode(
            token,
            keys.get_signing_key_from_jwt(token),
            algorithms=["ES256"],
            audience=audience,
            issuer=setup.server.issuer,
        )
    )


def _active(setup: TenantSetup, token: str) -> bool:
    introspector = getattr(setup, "_introspector", None) or setup.introspector()
    setup._introspector = introspector  # type: ignore[attr-defined]
    response = httpx.post(
        setup.server.base_url + "/oauth/introspect",
        data={"token": token},
        auth=(introspector["client_id"], introspector["client_secret"]),
    )
    return bool(response.json()["active"])


def _code(setup: TenantSetup, email: str = "mia@acme.example") -> Authorization:
    return authorize(
        setup.server.base_url,
        setup.agent["client_id"],
        REDIRECT,
        email,
        PASSWORD,
        scope="deals:read",
        resource=setup.crm,
    )


def _session(setup: TenantSetup, email: str = "mia@acme.example") -> dict[str, Any]:
    done = _code(setup, email)
    assert done.answer["iss"] == setup.server.issuer  # RFC 9207
    response = _redeem(setup, done.code, done.verifier)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_consent_flow_gives_the_agent_a_delegated_session(setup: TenantSetup) -> None:
    browser = Browser(setup.server.base_url)
    verifier, challenge = pkce_pair()
    page = browser.open(
        {
            "response_type": "code",
            "client_id": setup.agent["client_id"],
            "redirect_uri": "http://127.0.0.1:40999/callback",
            "state": "s1",
            "scope": "deals:read",
            "resource": setup.crm,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    assert page.status_code == 200 and "Sign in" in page.text  # loopback: any port matches
    assert page.headers["x-frame-options"] == "DENY"
    wrong = browser.submit(page, action="login", email="mia@acme.example", password="nope")
    assert wrong.status_code == 401 and "Wrong email or password" in wrong.text
    consent = browser.submit(wrong, action="login", email="mia@acme.example", password=PASSWORD)
    assert consent.status_code == 200
    for shown in ("helper", "sam@acme.example", setup.agent["address"], "deals:read", setup.crm):
        assert shown in consent.text  # the agent's name, sponsor, address and exactly the ask
    redirected = browser.submit(consent, action="allow")
    got = answer(redirected)
    assert redirected.headers["location"].startswith("http://127.0.0.1:40999/callback?")
    assert got["state"] == "s1" and got["iss"] == setup.server.issuer
    tokens = _redeem(setup, got["code"], verifier, "http://127.0.0.1:40999/callback").json()
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"].startswith("vk_rt_")
    claims = _claims(setup, tokens["access_token"], setup.crm)
    assert claims["act"] == {"sub": setup.agent["id"]}
    assert claims["client_id"] == setup.agent["id"] and claims["scope"] == "deals:read"
    mia = setup.server.cli("users", "list", "--tenant", setup.name)
    assert claims["sub"] == next(u["id"] for u in mia if u["email"] == "mia@acme.example")
    delegations = setup.server.cli(
        "delegations", "list", "--tenant", setup.name, "--user", "mia@acme.example"
    )
    assert [d["scopes"] for d in delegations] == [["deals:read"]]
    # A second visit with the consent on file goes straight back with a code.
    again = browser.open(
        {
            "response_type": "code",
            "client_id": setup.agent["client_id"],
            "redirect_uri": REDIRECT,
            "scope": "deals:read",
            "resource": setup.crm,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    assert "code" in answer(again)
    browser.close()
    events = {e["type"] for e in setup.server.cli("audit", "search", "--tenant", setup.name)}
    assert {
        "user.login_failed",
        "user.logged_in",
        "delegation.created",
        "authorization.granted",
        "token.issued",
    } <= events


def test_authorize_refusals(setup: TenantSetup) -> None:
    base = {
        "response_type": "code",
        "client_id": setup.agent["client_id"],
        "redirect_uri": REDIRECT,
        "state": "xyz",
        "scope": "deals:read",
    }
    browser = Browser(setup.server.base_url)
    _, challenge = pkce_pair()
    # Unregistered redirect URIs and unknown clients: a page, never a redirect.
    for bad in (
        {"redirect_uri": "https://evil.example/cb"},
        {"redirect_uri": ""},
        {"client_id": "agt_nope"},
        {"redirect_uri": "http://127.0.0.1:8765/other"},
    ):
        page = browser.open(
            {**base, "code_challenge": challenge, "code_challenge_method": "S256", **bad}
        )
        assert page.status_code == 400 and "location" not in page.headers
    # After the redirect URI is verified, errors go back with state and iss.
    for extra, error in (
        ({"code_challenge": challenge, "code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": challenge}, "invalid_request"),  # no method means plain: refused
        ({}, "invalid_request"),  # PKCE is required
        (
            {
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "response_type": "token",
            },
            "unsupported_response_type",
        ),
        (
            {"code_challenge": challenge, "code_challenge_method": "S256", "scope": "deals:admin"},
            "invalid_scope",
        ),
        (
            {
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "resource": "https://unknown.example",
            },
            "invalid_target",
        ),
        (
            {
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "authorization_details": '[{"type": "other"}]',
            },
            "invalid_authorization_details",
        ),
    ):
        got = answer(browser.open({**base, **extra}))
        assert got["error"] == error, (extra, got)
        assert got["state"] == "xyz" and got["iss"] == setup.server.issuer
    # The user declines.
    page = browser.open({**base, "code_challenge": challenge, "code_challenge_method": "S256"})
    consent = browser.submit(page, action="login", email="mia@acme.example", password=PASSWORD)
    assert answer(browser.submit(consent, action="deny"))["error"] == "access_denied"
    # A form without the CSRF cookie's value is refused.
    forged = browser.client.post("/oauth/authorize", data={"q": "", "csrf": "x", "action": "allow"})
    assert forged.status_code == 400
    cookie = browser.client.cookies.get("vk_csrf", path="/oauth/authorize") or ""
    echoed = browser.client.post(
        "/oauth/authorize", data={"q": "", "csrf": cookie, "action": "allow"}
    )
    assert len(cookie) == 43 and echoed.status_code == 400  # the cookie alone proves nothing
    browser.close()


def test_code_redemption_refusals(setup: TenantSetup) -> None:
    done = _code(setup)
    wrong = _redeem(setup, done.code, done.verifier[:-1] + "x")
    assert wrong.json()["error"] == "invalid_grant"  # PKCE mismatch (the code is now spent)
    other = _code(setup)
    assert (
        _redeem(setup, other.code, other.verifier, REDIRECT + "x").json()["error"]
        == "invalid_grant"
    )
    third = _code(setup)
    first = _redeem(setup, third.code, third.verifier)
    assert first.status_code == 200
    replay = _redeem(setup, third.code, third.verifier)
    assert replay.json()["error"] == "invalid_grant"
    # A replayed code revokes what the first redemption produced (RFC 6749 §4.1.2).
    assert not _active(setup, first.json()["access_token"])
    assert _refresh(setup, first.json()["refresh_token"]).json()["error"] == "invalid_grant"
    # Another client cannot redeem the agent's code.
    thief = setup.new_agent("thief", "deals:read")
    fourth = _code(setup)
    assert (
        _redeem(setup, fourth.code, fourth.verifier, client=thief).json()["error"]
        == "invalid_grant"
    )
    assert _redeem(setup, fourth.code, fourth.verifier).status_code == 200  # it burnt nothing


def test_refresh_rotation_and_reuse_detection(setup: TenantSetup) -> None:
    first = _session(setup)
    second = _refresh(setup, first["refresh_token"])
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    claims = _claims(setup, rotated["access_token"], setup.crm)
    assert claims["act"] == {"sub": setup.agent["id"]} and claims["scope"] == "deals:read"
    wider = _token(
        setup,
        setup.agent,
        grant_type="refresh_token",
        refresh_token=rotated["refresh_token"],
        scope="deals:write",
    )
    assert wider.json()["error"] == "invalid_scope"  # a session never widens
    # The spent token comes back: the whole family and its access tokens die.
    reused = _refresh(setup, first["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert not _active(setup, rotated["access_token"])
    assert _refresh(setup, rotated["refresh_token"]).json()["error"] == "invalid_grant"
    events = setup.server.cli(
        "audit", "search", "--tenant", setup.name, "--type", "refresh_token.reused"
    )
    assert len(events) == 1 and events[0]["outcome"] == "failure"
    # RFC 7009: revoking a refresh token ends its session.
    other = _session(setup)
    revoked = httpx.post(
        setup.server.base_url + "/oauth/revoke",
        data={"token": other["refresh_token"]},
        auth=(setup.agent["client_id"], setup.agent["client_secret"]),
    )
    assert revoked.status_code == 200
    assert not _active(setup, other["access_token"])
    assert _refresh(setup, other["refresh_token"]).json()["error"] == "invalid_grant"


def test_fifty_concurrent_refreshes_exactly_one_wins(setup: TenantSetup) -> None:
    token = _session(setup)["refresh_token"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: _refresh(setup, token), range(50)))
    winners = [r for r in results if r.status_code == 200]
    assert len(winners) == 1, [r.text for r in results if r.status_code != 400]
    assert all(r.json()["error"] == "invalid_grant" for r in results if r.status_code != 200)
    # The losers were reuses of a spent token, so the family is revoked, winner included.
    assert _refresh(setup, winners[0].json()["refresh_token"]).json()["error"] == "invalid_grant"


@pytest.mark.parametrize("how", ["delegation", "user", "agent"])
def test_revocation_reaches_sessions(setup: TenantSetup, how: str) -> None:
    session = _session(setup)
    assert _active(setup, session["access_token"])
    server, name = setup.server, setup.name
    if how == "delegation":
        delegation = server.cli("delegations", "list", "--tenant", name)[0]
        server.cli("delegations", "revoke", delegation["id"], "--tenant", name)
    elif how == "user":
        server.cli("users", "deactivate", "mia@acme.example", "--tenant", name)
    else:
        server.cli("agents", "suspend", setup.agent["id"])
    assert not _active(setup, session["access_token"])
    if how == "agent":
        server.cli("agents", "resume", setup.agent["id"])  # the session began before: stays dead
    refused = _refresh(setup, session["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


def test_user_token_from_sign_in_is_a_subject_for_exchange(setup: TenantSetup) -> None:
    server, name = setup.server, setup.name
    app = server.cli(
        "clients", "create", "portal", "--tenant", name, "--redirect-uri", APP_REDIRECT
    )
    done = authorize(
        server.base_url, app["client_id"], APP_REDIRECT, "mia@acme.example", PASSWORD, consent=False
    )
    response = _redeem(setup, done.code, done.verifier, APP_REDIRECT, client=app)
    assert response.status_code == 200, response.text
    user_token = response.json()["access_token"]
    claims = _claims(setup, user_token, server.issuer)
    assert "act" not in claims and claims["client_id"] == app["client_id"]
    exchange = {
        "grant_type": EXCHANGE,
        "subject_token": user_token,
        "subject_token_type": ACCESS,
        "resource": setup.crm,
    }
    refused = _token(setup, setup.agent, **exchange)
    assert refused.json()["error"] == "invalid_grant"  # no consent yet
    assert "consent" in refused.json()["error_description"]
    server.cli(
        "delegations",
        "create",
        "--tenant",
        name,
        "--user",
        "mia@acme.example",
        "--agent",
        setup.agent["id"],
        "--scope",
        "deals:read",
    )
    exchanged = _token(setup, setup.agent, **exchange)
    assert exchanged.status_code == 200, exchanged.text
    delegated = _claims(setup, exchanged.json()["access_token"], setup.crm)
    assert delegated["sub"] == claims["sub"] and delegated["act"] == {"sub": setup.agent["id"]}
    assert exchanged.json()["issued_token_type"] == ACCESS


def test_metadata_announces_the_authorization_endpoint(setup: TenantSetup) -> None:
    meta = httpx.get(setup.server.base_url + "/.well-known/oauth-authorization-server").json()
    assert urlsplit(meta["authorization_endpoint"]).path == "/oauth/authorize"
    assert meta["response_types_supported"] == ["code"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert {"authorization_code", "refresh_token", EXCHANGE} <= set(meta["grant_types_supported"])


def test_a_dpop_bound_session_needs_its_key(setup: TenantSetup) -> None:
    auth = (setup.agent["client_id"], setup.agent["client_secret"])
    mine, other = DPoPClient(setup.server), DPoPClient(setup.server)
    # dpop_jkt at the authorization endpoint binds the code to that key (RFC 9449 §10).
    done = authorize(
        setup.server.base_url,
        setup.agent["client_id"],
        REDIRECT,
        "mia@acme.example",
        PASSWORD,
        scope="deals:read",
        resource=setup.crm,
        extra={"dpop_jkt": mine.key.thumbprint},
    )
    redeem = {
        "grant_type": "authorization_code",
        "code": done.code,
        "redirect_uri": REDIRECT,
        "code_verifier": done.verifier,
    }
    assert other.post(redeem, auth).json()["error"] == "invalid_dpop_proof"
    again = _code(setup)  # a code without dpop_jkt, redeemed with a proof: bound from here on
    session = mine.post({**redeem, "code": again.code, "code_verifier": again.verifier}, auth)
    assert session.status_code == 200, session.text
    assert session.json()["token_type"] == "DPoP"
    claims = _claims(setup, session.json()["access_token"], setup.crm)
    assert claims["cnf"] == {"jkt": mine.key.thumbprint}
    refresh = {"grant_type": "refresh_token", "refresh_token": session.json()["refresh_token"]}
    assert _refresh(setup, refresh["refresh_token"]).json()["error"] == "invalid_dpop_proof"
    assert other.post(refresh, auth).json()["error"] == "invalid_dpop_proof"
    renewed = mine.post(refresh, auth)
    assert renewed.status_code == 200, renewed.text
    assert _claims(setup, renewed.json()["access_token"], setup.crm)["cnf"] == claims["cnf"]


def test_authlib_client_runs_the_code_flow_and_refreshes(setup: TenantSetup) -> None:
    """A third-party OAuth client (authlib) builds the request, redeems the code with its
    own PKCE verifier and refreshes: the flow works with clients we did not write."""
    base = setup.server.base_url
    client = OAuth2Client(
        setup.agent["client_id"], setup.agent["client_secret"], scope="deals:read",
        redirect_uri=REDIRECT, code_challenge_method="S256",
    )  # fmt: skip
    verifier = generate_token(48)
    url, state = client.create_authorization_url(
        base + "/oauth/authorize", code_verifier=verifier, resource=setup.crm
    )
    browser = Browser(base)
    page = browser.client.get(url)
    consent = browser.submit(page, action="login", email="mia@acme.example", password=PASSWORD)
    back = browser.submit(consent, action="allow")
    browser.close()
    assert back.status_code == 303
    token = client.fetch_token(
        base + "/oauth/token", authorization_response=back.headers["location"],
        code_verifier=verifier, state=state,
    )  # fmt: skip
    assert token["token_type"] == "Bearer" and token["scope"] == "deals:read"
    claims = _claims(setup, token["access_token"], setup.crm)
    assert claims["act"] == {"sub": setup.agent["id"]}
    renewed = client.refresh_token(base + "/oauth/token", refresh_token=token["refresh_token"])
    assert renewed["refresh_token"] != token["refresh_token"]
    assert _claims(setup, renewed["access_token"], setup.crm)["sub"] == claims["sub"]
    client.close()


def test_sign_in_tokens_carry_no_scope_or_resource(setup: TenantSetup) -> None:
    """A service client signs the user in for ValetKey itself; resources are for agents."""
    app = setup.server.cli("clients", "create", "portal", "--tenant", setup.name,
                           "--redirect-uri", APP_REDIRECT)  # fmt: skip
    browser = Browser(setup.server.base_url)
    _, challenge = pkce_pair()
    base = {"response_type": "code", "client_id": app["client_id"], "redirect_uri": APP_REDIRECT,
            "code_challenge": challenge, "code_challenge_method": "S256"}  # fmt: skip
    assert answer(browser.open({**base, "resource": setup.crm}))["error"] == "invalid_target"
    assert answer(browser.open({**base, "scope": "deals:admin"}))["error"] == "invalid_scope"
    assert (
        answer(browser.open({k: v for k, v in base.items() if k != "response_type"}))["error"]
        == "invalid_request"
    )
    browser.close()


def test_a_mandate_template_bounds_the_code_flow_too(setup: TenantSetup) -> None:
    server, name = setup.server, setup.name
    server.cli("delegations", "create", "--tenant", name, "--user", "mia@acme.example",
               "--agent", setup.agent["id"], "--scope", "deals:read", "--resource", setup.crm,
               "--mandate-action", "read", "--mandate-location", "crm:deals/42")  # fmt: skip
    done = _code(setup)  # the delegation covers the ask: no consent screen
    tokens = _redeem(setup, done.code, done.verifier).json()
    template = [{"type": "mandate", "actions": ["read"], "locations": ["crm:deals/42"]}]
    assert _claims(setup, tokens["access_token"], setup.crm)["authorization_details"] == template
    refreshed = _refresh(setup, tokens["refresh_token"]).json()
    assert _claims(setup, refreshed["access_token"], setup.crm)["authorization_details"] == template
    # A task mandate is never slipped past the user: it brings the consent screen back.
    wide = '[{"type": "mandate", "actions": ["delete"], "locations": ["*"]}]'
    browser = Browser(server.base_url)
    _, challenge = pkce_pair()
    page = browser.open({"response_type": "code", "client_id": setup.agent["client_id"],
                         "redirect_uri": REDIRECT, "scope": "deals:read", "resource": setup.crm,
                         "code_challenge": challenge, "code_challenge_method": "S256",
                         "authorization_details": wide})  # fmt: skip
    consent = browser.submit(page, action="login", email="mia@acme.example", password=PASSWORD)
    assert consent.status_code == 200 and "delete" in consent.text
    browser.close()


def test_a_new_password_ends_open_sessions(setup: TenantSetup) -> None:
    browser = Browser(setup.server.base_url)
    _, challenge = pkce_pair()
    params = {"response_type": "code", "client_id": setup.agent["client_id"],
              "redirect_uri": REDIRECT, "scope": "deals:read", "resource": setup.crm,
              "code_challenge": challenge, "code_challenge_method": "S256"}  # fmt: skip
    page = browser.open(params)
    consent = browser.submit(page, action="login", email="mia@acme.example", password=PASSWORD)
    assert "Allow this agent?" in consent.text
    assert "Allow this agent?" in browser.open(params).text  # the session cookie works
    setup.server.cli("users", "set-password", "mia@acme.example", "--tenant", setup.name,
                     input="another long passphrase 7\n")  # fmt: skip
    assert "Sign in" in browser.open(params).text  # signed out everywhere
    stale = browser.submit(consent, action="allow")  # an old form, no session: sign in again
    assert stale.status_code == 200 and "Sign in" in stale.text
    browser.close()


def test_password_guessing_is_throttled_per_account(setup: TenantSetup) -> None:
    """Ten failed sign-ins lock the account's sign-in for the rest of a 15-minute window,
    on every node (the count is in the database); the right password waits too."""
    browser = Browser(setup.server.base_url)
    _, challenge = pkce_pair()
    page = browser.open({"response_type": "code", "client_id": setup.agent["client_id"],
                         "redirect_uri": REDIRECT, "code_challenge": challenge,
                         "code_challenge_method": "S256", "scope": "deals:read"})  # fmt: skip
    for attempt in range(10):
        page = browser.submit(page, action="login", email="mia@acme.example",
                              password=f"guess number {attempt}")  # fmt: skip
        assert page.status_code == 401
    locked = browser.submit(page, action="login", email="mia@acme.example", password=PASSWORD)
    assert locked.status_code == 429 and "Too many failed sign-ins" in locked.text
    assert int(locked.headers["retry-after"]) > 0
    other = browser.submit(locked, action="login", email="sam@acme.example", password=PASSWORD)
    assert other.status_code == 200  # another account is not affected
    browser.close()
