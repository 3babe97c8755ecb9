"""ValetKey as an OAuth client of a downstream platform: the token endpoint (code
exchange and refresh) and nothing else. These calls are rare (a refresh per token
lifetime per connection), so httpx is the right client here; the gateway's forwarding
path uses a faster one (DESIGN.md, "Measured facts").

Every failure is classified, because the vault acts on the class: only `invalid_grant`
means the user's grant is gone (`needs_reauth`); a 5xx, a timeout or a network error
means try later and touch nothing."""

import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx

from valetkey.vault.connections import PlatformTokens
from valetkey.vault.providers import Provider, ProviderError, with_api_base

MAX_TOKEN_TIMEOUT = 10.0  # the refresh lease (refresh.LEASE_SECONDS) outlasts it


def token_timeout(gateway_timeout: float) -> httpx.Timeout:
    """How long a token request may take: the gateway's timeout, at most 10 s."""
    seconds = min(MAX_TOKEN_TIMEOUT, gateway_timeout)
    return httpx.Timeout(seconds, connect=min(5.0, seconds))


MAX_TOKEN_RESPONSE = 64 * 1024


class PlatformError(Exception):
    """The platform's token endpoint did not give tokens."""

    status: int = 502  # what the gateway answers
    code = "platform_error"


class PlatformUnavailable(PlatformError):
    """5xx, a network error or an unreadable answer: try later, change nothing."""

    code = "platform_unavailable"


class PlatformTimeout(PlatformError):
    status = 504
    code = "platform_timeout"


class PlatformRefused(PlatformError):
    """An OAuth error from the platform (RFC 6749 §5.2)."""

    def __init__(self, error: str, description: str = "", grant_gone: bool = False) -> None:
        super().__init__(
            f"the platform refused: {error}" + (f" ({description})" if description else "")
        )
        self.error = error
        self.grant_gone = grant_gone or error == "invalid_grant"


@dataclass(frozen=True, slots=True)
class Issued:
    tokens: PlatformTokens
    expires_in: int | None
    scopes: tuple[str, ...] | None


def basic_auth(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: each part form-urlencoded before base64 (httpx's `auth=` skips that)."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


async def token_request(
    http: httpx.AsyncClient,
    provider: Provider,
    secret: str,
    form: dict[str, str],
    previous: PlatformTokens | None = None,
) -> Issued:
    """POST the token endpoint; the answer as tokens, or a classified PlatformError.
    `previous` supplies what a static-refresh-token platform does not send again."""
    config = provider.config
    headers = {"Accept": "application/json", **config.token_request_headers}
    body = dict(form)
    if config.token_auth_method == "client_secret_basic":
        headers["Authorization"] = basic_auth(provider.client_id, secret)
    else:
        body.update(client_id=provider.client_id, client_secret=secret)
    try:
        response = await http.post(config.token_url, data=body, headers=headers)
    except httpx.TimeoutException as exc:
        raise PlatformTimeout("the platform's token endpoint did not answer in time") from exc
    except httpx.HTTPError as exc:
        raise PlatformUnavailable(f"the platform's token endpoint is unreachable: {exc}") from exc
    data = _json(response)
    if response.status_code >= 500 or response.status_code == 429:
        raise PlatformUnavailable(f"the platform's token endpoint answered {response.status_code}")
    if response.status_code != 200 or not isinstance(data.get("access_token"), str):
        error = data.get("error")
        if isinstance(error, str) and error:
            raise PlatformRefused(error, str(data.get("error_description") or "")[:200],
                                  error in config.grant_errors)  # fmt: skip
        raise PlatformUnavailable(
            f"the platform's token endpoint answered {response.status_code} without tokens"
        )
    refresh = data.get("refresh_token")
    api_base = data.get(config.api_base_from_token) if config.api_base_from_token else None
    if api_base is not None:
        try:  # the gateway will send this platform's token there: https (or loopback) only
            api_base = with_api_base(config, str(api_base)).api_base
        except ProviderError as exc:
            raise PlatformUnavailable(f"the platform named an unusable API base: {exc}") from exc
    tokens = PlatformTokens(
        refresh_token=refresh
        if isinstance(refresh, str) and refresh
        else (previous.refresh_token if previous else None),
        access_token=data["access_token"],
        token_type=str(data.get("token_type") or "Bearer"),
        api_base=api_base
        if isinstance(api_base, str)
        else (previous.api_base if previous else None),
    )
    expires = data.get("expires_in")
    scope = data.get("scope")
    return Issued(
        tokens,
        _seconds(expires),
        tuple(scope.replace(",", " ").split()) if isinstance(scope, str) else None,
    )


def _seconds(value: Any) -> int | None:
    """`expires_in`, which some platforms send as a string."""
    try:
        seconds = int(float(value))
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


def _json(response: httpx.Response) -> dict[str, Any]:
    if len(response.content) > MAX_TOKEN_RESPONSE:
        return {}
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def refresh(
    http: httpx.AsyncClient, provider: Provider, secret: str, tokens: PlatformTokens
) -> Issued:
    if not tokens.refresh_token:
        raise PlatformRefused("invalid_grant", "the connection holds no refresh token")
    return await token_request(
        http,
        provider,
        secret,
        {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token},
        tokens,
    )


async def redeem_code(
    http: httpx.AsyncClient,
    provider: Provider,
    secret: str,
    code: str,
    redirect_uri: str,
    verifier: str | None,
) -> Issued:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier:
        form["code_verifier"] = verifier
    return await token_request(http, provider, secret, form)
