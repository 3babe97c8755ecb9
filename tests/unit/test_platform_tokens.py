"""How ValetKey reads a platform's token endpoint: the answers of real platforms' quirks
(HTTP 200 errors, their own names for a dead grant, static refresh tokens, instance URLs,
string `expires_in`) and the classes of failure the vault acts on. The platform is an
httpx mock transport here; the integration tests run real local platforms."""

import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from valetkey.vault import platform
from valetkey.vault.connections import PlatformTokens
from valetkey.vault.providers import Provider, load_preset, parse_config

LOCAL = {"authorize_url": "http://127.0.0.1:9/authorize", "token_url": "http://127.0.0.1:9/token"}
OLD = PlatformTokens("rt-old", "at-old", "Bearer", None)


def provider(preset: str | None = None, **options: Any) -> Provider:
    data = {**(load_preset(preset) if preset else {"api_base": "http://127.0.0.1:9/api"}),
            **LOCAL, **options}  # fmt: skip
    return Provider("prv_1", "ten_1", "crm", parse_config(data), "client id:1", (), 0.0)


def answering(status: int, body: Any, seen: list[httpx.Request] | None = None) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if isinstance(body, Exception):
            raise body
        if isinstance(body, bytes):
            return httpx.Response(status, content=body)
        return httpx.Response(status, json=body)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


async def refresh(p: Provider, status: int, body: Any,
                  seen: list[httpx.Request] | None = None) -> platform.Issued:  # fmt: skip
    async with answering(status, body, seen) as http:
        return await platform.refresh(http, p, "s3cret/+=", OLD)


async def test_a_rotating_answer_and_how_the_client_authenticates() -> None:
    seen: list[httpx.Request] = []
    issued = await refresh(provider(), 200, {"access_token": "at-new", "refresh_token": "rt-new",
                                             "expires_in": "3600", "token_type": "bearer",
                                             "scope": "a b"}, seen)  # fmt: skip
    assert issued.tokens == PlatformTokens("rt-new", "at-new", "bearer", None)
    assert issued.expires_in == 3600 and issued.scopes == ("a", "b")
    basic = seen[0].headers["authorization"].removeprefix("Basic ")
    assert base64.b64decode(basic).decode() == "client+id%3A1:s3cret%2F%2B%3D"  # RFC 6749 2.3.1
    form = parse_qs(seen[0].content.decode())
    assert form == {"grant_type": ["refresh_token"], "refresh_token": ["rt-old"]}


async def test_static_refresh_tokens_and_post_authentication() -> None:
    seen: list[httpx.Request] = []
    issued = await refresh(provider("hubspot"), 200, {"access_token": "at-2", "expires_in": 1800},
                           seen)  # fmt: skip
    assert issued.tokens.refresh_token == "rt-old"  # not sent again: the old one stands
    form = parse_qs(seen[0].content.decode())
    assert form["client_id"] == ["client id:1"] and form["client_secret"] == ["s3cret/+="]
    assert "authorization" not in seen[0].headers


async def test_github_asks_for_json_and_names_a_dead_grant_its_own_way() -> None:
    seen: list[httpx.Request] = []
    with pytest.raises(platform.PlatformRefused) as refused:
        await refresh(provider("github"), 200, {"error": "bad_refresh_token"}, seen)
    assert refused.value.grant_gone
    assert seen[0].headers["accept"] == "application/json"


async def test_slack_errors_come_as_http_200() -> None:
    with pytest.raises(platform.PlatformRefused) as refused:
        await refresh(provider("slack"), 200, {"ok": False, "error": "invalid_refresh_token"})
    assert refused.value.grant_gone


@pytest.mark.parametrize(
    ("status", "body", "expected", "gone"),
    [
        (400, {"error": "invalid_grant"}, platform.PlatformRefused, True),
        (401, {"error": "invalid_client"}, platform.PlatformRefused, False),
        (400, {"error": "invalid_refresh_token"}, platform.PlatformRefused, False),
        (503, {"error": "temporarily_unavailable"}, platform.PlatformUnavailable, False),
        (429, {}, platform.PlatformUnavailable, False),
        (200, b"<html>maintenance</html>", platform.PlatformUnavailable, False),
        (200, {"access_token": 42}, platform.PlatformUnavailable, False),
        (0, httpx.ReadTimeout("slow"), platform.PlatformTimeout, False),
        (0, httpx.ConnectError("refused"), platform.PlatformUnavailable, False),
    ],
)
async def test_failures_are_classified(
    status: int, body: Any, expected: type[Exception], gone: bool
) -> None:
    with pytest.raises(expected) as raised:
        await refresh(provider(), status, body)
    assert getattr(raised.value, "grant_gone", False) is gone


@pytest.mark.parametrize(
    ("instance", "ok"),
    [("https://acme.my.salesforce.com", True), ("http://evil.example", False),
     ("javascript:alert(1)", False), ("https://user:pw@acme.example", False)],
)  # fmt: skip
async def test_an_instance_url_must_be_https(instance: str, ok: bool) -> None:
    p = provider("salesforce")
    body = {"access_token": "at", "instance_url": instance}
    if ok:
        assert (await refresh(p, 200, body)).tokens.api_base == instance
    else:
        with pytest.raises(platform.PlatformUnavailable):
            await refresh(p, 200, body)


async def test_a_connection_without_a_refresh_token_needs_its_owner() -> None:
    call: Callable[..., Any] = platform.refresh
    async with answering(200, {}) as http:
        with pytest.raises(platform.PlatformRefused) as refused:
            await call(http, provider(), "s", PlatformTokens(None, "at"))
    assert refused.value.grant_gone
