"""The stand-in downstream platform (node-oidc-provider, tests/support/oidc_platform.py) does
what the vault tests assume of a real one, checked with authlib as an independent client:
code + PKCE S256 through `login_and_consent`, a new refresh token on every refresh, reuse of
a consumed refresh token answered `invalid_grant` and revoking the grant, RFC 7009 revocation,
a bearer API that logs every request's headers, and counters in `stats()`."""

import time
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.support.oidc_platform import OidcPlatform, login_and_consent, running_oidc_platform

with warnings.catch_warnings():
    # authlib >= 1.9 prefers the `httpx2` package and warns when it falls back to httpx; its
    # deprecate module installs an "always" filter on import, so ours goes in after it.
    import authlib.deprecate  # type: ignore[import-untyped]  # noqa: F401

    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.common.security import generate_token  # type: ignore[import-untyped]
    from authlib.integrations.base_client import OAuthError  # type: ignore[import-untyped]
    from authlib.integrations.httpx_client import OAuth2Client  # type: ignore[import-untyped]

CLIENT_ID = "valetkey-vault"
CLIENT_SECRET = "platform-secret-" + "x" * 24
REDIRECT = "http://127.0.0.1:8765/connections/callback"
SCOPE = "openid offline_access crm.read crm.write"


@pytest.fixture(scope="module")
def platform() -> Iterator[OidcPlatform]:
    with running_oidc_platform(CLIENT_ID, CLIENT_SECRET, [REDIRECT], access_ttl=60) as running:
        yield running


def oauth_client(method: str = "client_secret_basic") -> Any:
    return OAuth2Client(
        CLIENT_ID,
        CLIENT_SECRET,
        scope=SCOPE,
        redirect_uri=REDIRECT,
        code_challenge_method="S256",
        token_endpoint_auth_method=method,
    )


def connect(platform: OidcPlatform, client: Any, user: str, **params: str) -> dict[str, Any]:
    """Code + PKCE: sign in as `user`, exchange the code; the token response."""
    verifier = generate_token(48)
    url, state = client.create_authorization_url(
        platform.authorize_url, code_verifier=verifier, **params
    )
    with httpx.Client(timeout=5) as browser:
        location = login_and_consent(browser, url, user)
    assert location.startswith(REDIRECT + "?"), location
    answer = query(location)
    assert answer["state"] == state
    assert answer["iss"] == platform.issuer  # RFC 9207
    token = client.fetch_token(
        platform.token_url, authorization_response=location, code_verifier=verifier
    )
    return dict(token)


def refresh(platform: OidcPlatform, client: Any, refresh_token: str) -> dict[str, Any]:
    """A refresh without `scope` (RFC 6749 §6: the scope granted before). authlib would send
    the client's whole scope, offline_access included, which the platform may not have granted."""
    return dict(client.refresh_token(platform.token_url, refresh_token=refresh_token, scope=None))


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def api_get(platform: OidcPlatform, path: str, access_token: str, **headers: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {access_token}"}
    return httpx.get(platform.api_base + path, headers={**auth, **headers}, timeout=5)


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_code_flow_with_pkce(platform: OidcPlatform, method: str) -> None:
    before = platform.stats()
    with oauth_client(method) as client:
        token = connect(platform, client, "alice")
    assert token["token_type"].lower() == "bearer"
    assert token["expires_in"] == 60
    assert token["refresh_token"]
    assert token["id_token"]
    # oidc-provider drops offline_access unless prompt=consent (OpenID Connect Core 11), yet
    # the platform issues refresh tokens to this client regardless.
    assert set(token["scope"].split()) == {"openid", "crm.read", "crm.write"}
    assert delta(before, platform.stats()) == {"code_grants": 1}


def test_offline_access_is_granted_with_prompt_consent(platform: OidcPlatform) -> None:
    with oauth_client() as client:
        token = connect(platform, client, "alice", prompt="consent")
        assert set(token["scope"].split()) == set(SCOPE.split())
        # Now authlib's default refresh (with the client's whole scope) is fine.
        again = dict(client.refresh_token(platform.token_url, refresh_token=token["refresh_token"]))
    assert set(again["scope"].split()) == set(SCOPE.split())


def test_a_refresh_may_not_widen_the_scope(platform: OidcPlatform) -> None:
    """Without prompt=consent offline_access was dropped; asking for it on refresh fails."""
    with oauth_client() as client:
        token = connect(platform, client, "alice")
        with pytest.raises(OAuthError) as wider:
            client.refresh_token(platform.token_url, refresh_token=token["refresh_token"])
        assert wider.value.error == "invalid_scope"
        narrower = dict(
            client.refresh_token(
                platform.token_url, refresh_token=token["refresh_token"], scope="crm.read"
            )
        )
    assert narrower["scope"] == "crm.read"


def test_refresh_rotates_and_reuse_revokes_the_grant(platform: OidcPlatform) -> None:
    with oauth_client() as client:
        first = connect(platform, client, "bob")
        before = platform.stats()
        second = refresh(platform, client, first["refresh_token"])
        assert second["refresh_token"] != first["refresh_token"]
        assert second["access_token"] != first["access_token"]
        assert api_get(platform, "/deals/42", second["access_token"]).status_code == 200
        assert delta(before, platform.stats()) == {"refresh_grants": 1, "api_calls": 1}

        # The consumed refresh token again: refused, and the whole grant goes with it.
        with pytest.raises(OAuthError) as reuse:
            refresh(platform, client, first["refresh_token"])
        assert reuse.value.error == "invalid_grant"
        after_reuse = platform.stats()
        assert delta(before, after_reuse) == {
            "refresh_grants": 1,
            "api_calls": 1,
            "grant_errors": 1,
            "reuse_detected": 1,
            "grants_revoked": 1,
        }
        with pytest.raises(OAuthError) as revoked:
            refresh(platform, client, second["refresh_token"])
        assert revoked.value.error == "invalid_grant"
    assert api_get(platform, "/deals/42", second["access_token"]).status_code == 401
    # A refresh token of a revoked grant is unknown now: an error, but not a second reuse.
    later = delta(after_reuse, platform.stats())
    assert later == {"grant_errors": 1, "api_rejected": 1}


def test_api_checks_the_bearer_token_and_logs_every_request(platform: OidcPlatform) -> None:
    with oauth_client() as client:
        token = connect(platform, client, "carol")
    platform.reset_log()
    ok = api_get(platform, "/deals/42", token["access_token"], **{"X-Trace-Id": "t-1"})
    assert ok.status_code == 200
    body = ok.json()
    assert body["id"] == "42"
    assert body["name"] == "Acme renewal"
    assert body["amount"] == 120000
    assert body["path"] == "/api/deals/42"
    assert body["method"] == "GET"
    assert body["sub"] == "carol"
    assert set(body["scope"].split()) >= {"crm.read", "crm.write"}

    written = httpx.patch(
        platform.api_base + "/deals/42?notify=no",
        json={"stage": "won"},
        headers={"Authorization": f"Bearer {token['access_token']}"},
        timeout=5,
    )
    assert written.json()["received"] == {"stage": "won"}
    assert written.json()["method"] == "PATCH"

    for bad in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}):
        refused = httpx.delete(platform.api_base + "/deals/42", headers=bad, timeout=5)
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
        assert refused.headers["www-authenticate"].startswith("Bearer ")

    log = platform.api_log()
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("GET", "/api/deals/42", 200),
        ("PATCH", "/api/deals/42", 200),
        ("DELETE", "/api/deals/42", 401),
        ("DELETE", "/api/deals/42", 401),
        ("DELETE", "/api/deals/42", 401),
    ]
    assert log[0]["headers"]["authorization"] == f"Bearer {token['access_token']}"
    assert log[0]["headers"]["x-trace-id"] == "t-1"
    assert log[1]["query"] == "notify=no"
    assert log[1]["body"] == '{"stage":"won"}'
    assert "authorization" not in log[2]["headers"]
    assert log[3]["headers"]["authorization"] == "Bearer not-a-token"
    platform.reset_log()
    assert platform.api_log() == []


def test_revoking_the_refresh_token_ends_the_grant(platform: OidcPlatform) -> None:
    with oauth_client() as client:
        token = connect(platform, client, "dave")
        before = platform.stats()
        response = client.revoke_token(
            platform.revoke_url, token=token["refresh_token"], token_type_hint="refresh_token"
        )
        assert response.status_code == 200
        with pytest.raises(OAuthError) as refused:
            refresh(platform, client, token["refresh_token"])
        assert refused.value.error == "invalid_grant"
    assert api_get(platform, "/deals/1", token["access_token"]).status_code == 401
    changes = delta(before, platform.stats())
    assert changes == {"revocations": 1, "grants_revoked": 1, "grant_errors": 1, "api_rejected": 1}


def test_revoking_an_access_token_also_drops_the_grants_refresh_tokens(
    platform: OidcPlatform,
) -> None:
    """oidc-provider's default: the grant object stays, but every token of it is gone."""
    with oauth_client() as client:
        token = connect(platform, client, "erin")
        client.revoke_token(
            platform.revoke_url, token=token["access_token"], token_type_hint="access_token"
        )
        assert api_get(platform, "/deals/1", token["access_token"]).status_code == 401
        with pytest.raises(OAuthError) as refused:
            refresh(platform, client, token["refresh_token"])
        assert refused.value.error == "invalid_grant"


def test_pkce_is_required_and_checked(platform: OidcPlatform) -> None:
    params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT,
              "scope": SCOPE, "state": "s1"}  # fmt: skip
    with httpx.Client(timeout=5) as browser:
        location = login_and_consent(browser, platform.authorize_url + "?" + urlencode(params), "x")
    assert query(location)["error"] == "invalid_request"

    with oauth_client() as client:
        url, _ = client.create_authorization_url(
            platform.authorize_url, code_verifier=generate_token(48)
        )
        with httpx.Client(timeout=5) as browser:
            location = login_and_consent(browser, url, "frank")
        with pytest.raises(OAuthError) as wrong:
            client.fetch_token(
                platform.token_url,
                authorization_response=location,
                code_verifier=generate_token(48),
            )
        assert wrong.value.error == "invalid_grant"


def test_access_tokens_expire_after_access_ttl() -> None:
    with (
        running_oidc_platform(CLIENT_ID, CLIENT_SECRET, [REDIRECT], access_ttl=3) as short,
        oauth_client() as client,
    ):
        token = connect(short, client, "gina")
        assert token["expires_in"] == 3  # long enough for a loaded machine's first call
        assert api_get(short, "/deals/42", token["access_token"]).status_code == 200
        time.sleep(3.1)
        expired = api_get(short, "/deals/42", token["access_token"])
        assert expired.status_code == 401
        assert 'error="invalid_token"' in expired.headers["www-authenticate"]
        fresh = refresh(short, client, token["refresh_token"])
        assert api_get(short, "/deals/42", fresh["access_token"]).status_code == 200
