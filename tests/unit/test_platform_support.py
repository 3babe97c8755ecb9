"""The stand-in platform the vault and gateway tests run against behaves like a real one:
PKCE codes, rotating and static refresh tokens, reuse detection, outages that leave tokens
alone, expiry, an API that shows what reached it, and enough concurrency for single-flight."""

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.platform import (
    BIG_CHUNK,
    BIG_SIZE,
    MAIL_INJECTION,
    MAIL_VISIBLE,
    OFF_BASE_REDIRECT,
    Platform,
    Quirks,
    big_body,
    running_platform,
)


@pytest.fixture
def platform() -> Iterator[Platform]:
    with running_platform() as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as running:
        yield running


def _basic(platform: Platform) -> httpx.BasicAuth:
    return httpx.BasicAuth(platform.client_id, platform.client_secret)


def _refresh(client: httpx.Client, platform: Platform, token: str) -> httpx.Response:
    return client.post(platform.token_url, auth=_basic(platform),
                       data={"grant_type": "refresh_token", "refresh_token": token})  # fmt: skip


def _me(client: httpx.Client, platform: Platform, access: str) -> httpx.Response:
    return client.get(platform.api_base + "/me", headers={"Authorization": f"Bearer {access}"})


def _authorize(client: httpx.Client, platform: Platform, **extra: str) -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {"response_type": "code", "client_id": platform.client_id,
              "redirect_uri": "http://127.0.0.1:9/callback?x=1", "scope": "crm.read",
              "state": "st-1", "code_challenge": challenge.rstrip(b"=").decode(),
              "code_challenge_method": "S256", **extra}  # fmt: skip
    answer = client.get(platform.authorize_url, params=params)
    assert answer.status_code == 302
    location = urlsplit(answer.headers["location"])
    query = parse_qs(location.query)
    assert location.path == "/callback" and query["x"] == ["1"] and query["state"] == ["st-1"]
    return query["code"][0], verifier


def test_authorization_code_with_pkce(platform: Platform, client: httpx.Client) -> None:
    platform.next_user = "mia@acme.example"
    code, verifier = _authorize(client, platform, access_type="offline")
    assert platform.authorize_requests[0]["access_type"] == "offline"
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": "http://127.0.0.1:9/callback?x=1"}  # fmt: skip
    wrong = client.post(platform.token_url, data=form, auth=httpx.BasicAuth("vk-client", "nope"))
    assert wrong.status_code == 401 and wrong.json() == {"error": "invalid_client"}
    posted = {**form, "client_id": platform.client_id, "client_secret": platform.client_secret}
    tokens = client.post(platform.token_url, data=posted).json()  # client_secret_post
    assert tokens["access_token"].startswith("plat_at_")
    assert tokens["refresh_token"].startswith("plat_rt_")
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
    assert tokens["scope"] == "crm.read" and "instance_url" not in tokens
    assert _me(client, platform, tokens["access_token"]).json() == {"user": "mia@acme.example"}
    again = client.post(platform.token_url, data=form, auth=_basic(platform))
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"  # single use
    code, _ = _authorize(client, platform)
    bad = {**form, "code": code, "code_verifier": secrets.token_urlsafe(48)}
    assert client.post(platform.token_url, data=bad, auth=_basic(platform)).status_code == 400
    plain = client.get(platform.authorize_url, params={"response_type": "code",
                       "client_id": "vk-client", "redirect_uri": "http://127.0.0.1:9/cb",
                       "code_challenge": "abc", "code_challenge_method": "plain"})  # fmt: skip
    assert plain.status_code == 400 and "S256" in plain.text
    assert platform.code_grants == 4


def test_rotating_refresh_and_reuse_revokes_the_family(
    platform: Platform, client: httpx.Client
) -> None:
    first = platform.issue_refresh_token("sam@acme.example")
    one = _refresh(client, platform, first).json()
    assert one["refresh_token"] != first and one["scope"] == "crm.read crm.write"
    two = _refresh(client, platform, one["refresh_token"]).json()
    assert _me(client, platform, two["access_token"]).status_code == 200
    reused = _refresh(client, platform, first)
    assert reused.status_code == 400 and reused.json() == {"error": "invalid_grant"}
    assert platform.reuse_detected == 1 and platform.successful_refreshes == 2
    assert platform.refresh_grants == 3
    for token in (one["access_token"], two["access_token"]):
        dead = _me(client, platform, token)
        assert dead.status_code == 401
        assert dead.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert _refresh(client, platform, two["refresh_token"]).status_code == 400
    assert not platform.token_active(two["refresh_token"])


def test_static_refresh_tokens_and_extras(client: httpx.Client) -> None:
    quirks = Quirks(rotating=False, instance_url="https://acme.my.crm.example", access_ttl=None)
    with running_platform(quirks=quirks) as platform:
        token = platform.issue_refresh_token("sam@acme.example", "crm.read")
        for _ in range(2):
            answer = _refresh(client, platform, token).json()
            assert "refresh_token" not in answer and "expires_in" not in answer
            assert answer["instance_url"] == "https://acme.my.crm.example"
        assert platform.successful_refreshes == 2 and platform.reuse_detected == 0
        narrower = client.post(platform.token_url, auth=_basic(platform), data={
            "grant_type": "refresh_token", "refresh_token": token, "scope": "crm.write"
        })  # fmt: skip
        assert narrower.json() == {"error": "invalid_scope"}
        platform.quirks.rotating, platform.quirks.revoke_on_reuse = True, False
        rotated = _refresh(client, platform, token).json()
        assert _refresh(client, platform, token).status_code == 400  # reused, but forgiven:
        assert _refresh(client, platform, rotated["refresh_token"]).status_code == 200
        assert platform.reuse_detected == 1


def test_outage_leaves_tokens_usable_and_invalid_grant(
    platform: Platform, client: httpx.Client
) -> None:
    token = platform.issue_refresh_token("sam@acme.example")
    platform.quirks.token_status = 503
    down = _refresh(client, platform, token)
    assert down.status_code == 503 and down.json() == {"error": "temporarily_unavailable"}
    platform.quirks.token_status = None
    assert _refresh(client, platform, token).status_code == 200  # not consumed by the 503
    token = platform.issue_refresh_token("sam@acme.example")
    platform.quirks.invalid_grant = True
    assert _refresh(client, platform, token).json() == {"error": "invalid_grant"}
    assert platform.refresh_grants == 3 and platform.successful_refreshes == 1
    platform.reset_counts()
    assert platform.refresh_grants == 0 and platform.api_calls == []


def test_expire_access_tokens_and_revoke(platform: Platform, client: httpx.Client) -> None:
    token = platform.issue_refresh_token("sam@acme.example")
    access = _refresh(client, platform, token).json()
    assert _me(client, platform, access["access_token"]).status_code == 200
    platform.expire_access_tokens()
    assert _me(client, platform, access["access_token"]).status_code == 401
    fresh = _refresh(client, platform, access["refresh_token"]).json()
    assert _me(client, platform, fresh["access_token"]).status_code == 200
    revoked = client.post(platform.revoke_url, auth=_basic(platform),
                          data={"token": fresh["refresh_token"],
                                "token_type_hint": "refresh_token"})  # fmt: skip
    assert revoked.status_code == 200
    assert platform.revocations[0]["form"]["token"] == fresh["refresh_token"]
    assert platform.revocations[0]["authorization"].startswith("Basic ")
    assert _me(client, platform, fresh["access_token"]).status_code == 401  # the family
    assert [c.user for c in platform.api_calls] == ["sam@acme.example", None] * 2


def test_api_routes_and_header_echo(platform: Platform, client: httpx.Client) -> None:
    access = _refresh(client, platform, platform.issue_refresh_token("sam@acme.example"))
    auth = {"Authorization": f"Bearer {access.json()['access_token']}"}
    echo = client.get(platform.api_base + "/echo?q=1",
                      headers={**auth, "X-Agent-Id": "agt_1", "Cookie": "a=b"}).json()  # fmt: skip
    assert echo["method"] == "GET" and echo["path"] == "/api/echo" and echo["query"] == {"q": "1"}
    assert echo["headers"]["x-agent-id"] == "agt_1" and echo["headers"]["cookie"] == "a=b"
    call = platform.api_calls[-1]
    assert call.path == "/api/echo?q=1" and call.user == "sam@acme.example"
    deal = client.get(platform.api_base + "/deals/d-7", headers=auth).json()
    assert deal == {"id": "d-7", "name": "Acme renewal", "amount": 120000,
                    "stage": "negotiation", "owner": "sam@acme.example"}  # fmt: skip
    patched = client.patch(platform.api_base + "/deals/d-7", headers=auth, json={"stage": "won"})
    assert patched.json() == {"stage": "won"} and platform.api_calls[-1].body == b'{"stage":"won"}'
    assert client.delete(platform.api_base + "/deals/d-7", headers=auth).status_code == 204
    mail = client.get(platform.api_base + "/mail/m-1", headers=auth)
    assert mail.headers["content-type"] == "text/html; charset=utf-8"
    assert MAIL_VISIBLE in mail.text and MAIL_INJECTION in mail.text and "\u200b" in mail.text
    out = client.get(platform.api_base + "/redirect-out", headers=auth)
    assert out.status_code == 302 and out.headers["location"] == OFF_BASE_REDIRECT
    assert client.get(platform.api_base + "/nothing", headers=auth).status_code == 404
    platform.quirks.api_status = 429
    assert client.get(platform.api_base + "/me", headers=auth).status_code == 429


def test_big_is_streamed_chunked(platform: Platform, client: httpx.Client) -> None:
    access = _refresh(client, platform, platform.issue_refresh_token("sam@acme.example"))
    auth = {"Authorization": f"Bearer {access.json()['access_token']}"}
    with client.stream("GET", platform.api_base + "/big", headers=auth) as answer:
        assert answer.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in answer.headers
        body = b"".join(answer.iter_raw())
    assert len(body) == BIG_SIZE == 32 * BIG_CHUNK and body == big_body()
    assert _me(client, platform, access.json()["access_token"]).status_code == 200  # kept alive


def test_concurrent_refreshes_give_one_success_and_one_reuse(platform: Platform) -> None:
    platform.quirks.token_delay = 0.2
    token = platform.issue_refresh_token("sam@acme.example")
    statuses: list[int] = []

    def refresh() -> None:
        with httpx.Client(timeout=5) as own:
            statuses.append(_refresh(own, platform, token).status_code)

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 400]
    assert platform.successful_refreshes == 1 and platform.reuse_detected == 1


def test_sixty_concurrent_connections(platform: Platform) -> None:
    access = platform.issue_refresh_token("sam@acme.example")
    with httpx.Client(timeout=5) as setup:
        bearer = _refresh(setup, platform, access).json()["access_token"]
    platform.quirks.api_delay = 0.3
    results: list[Any] = []
    limits = httpx.Limits(max_connections=60, max_keepalive_connections=60)
    with httpx.Client(timeout=5, limits=limits) as shared:
        started = time.monotonic()
        threads = [threading.Thread(target=lambda: results.append(
            _me(shared, platform, bearer).status_code)) for _ in range(60)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    assert results == [200] * 60 and elapsed < 1.5  # in parallel, not 60 x 0.3 s
