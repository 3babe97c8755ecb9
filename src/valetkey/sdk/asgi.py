"""Enforcing ValetKey tokens in a web app: `require_token` (a FastAPI dependency) and
`TokenMiddleware` (plain ASGI, any framework).

Both read `Authorization: Bearer …` or `Authorization: DPoP …` plus its `DPoP` proof,
verify with a `TokenVerifier`, and refuse per RFC 6750 §3 and RFC 9449 §7.1: 401 with a
`WWW-Authenticate` challenge (no error code when no token came at all), 403
`insufficient_scope` naming the scopes needed, 400 for a malformed `Authorization`.
FastAPI is imported only when `require_token` is called, so the SDK's agent side never
needs it.

DPoP proofs name the URL the client called (`htu`); behind a reverse proxy, make the app
see the public scheme and host (uvicorn `--proxy-headers`, `--forwarded-allow-ips`).
"""

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from valetkey.sdk import _jose
from valetkey.sdk.errors import InvalidToken, MissingToken, SDKError
from valetkey.sdk.verifier import TokenVerifier, VerifiedToken

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATE_KEY = "token"  # request.state.token
VERIFIER_STATE_KEY = "token_verifier"  # app.state.token_verifier, for require_token()
DPOP_ALGS = " ".join(sorted(_jose.ASYMMETRIC - {"Ed25519"}))


def request_url(scope: Scope) -> str:
    """The URL the client called, as its DPoP proof names it: scheme, `Host`, raw path."""
    scheme = scope.get("scheme", "http")
    host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), None)
    if not host and scope.get("server"):
        server_host, port = scope["server"]
        host = f"{server_host}:{port}"
    raw = scope.get("raw_path")
    path = raw.decode("latin-1").split("?", 1)[0] if raw else scope.get("path", "/")
    return f"{scheme}://{host or 'localhost'}{path}"


async def authenticate(
    verifier: TokenVerifier,
    method: str,
    url: str,
    authorization: str | None,
    proofs: list[str],
) -> VerifiedToken:
    """The request's token, verified; `InvalidToken` (or `MissingToken`) otherwise."""
    if not authorization:
        raise MissingToken()
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return await verifier.averify(value)
    if scheme.lower() == "dpop" and value:
        if len(proofs) != 1:
            raise InvalidToken("invalid_dpop_proof", "exactly one DPoP header is required",
                               scheme="DPoP")  # fmt: skip
        try:
            return await verifier.averify(value, proofs[0], method, url)
        except InvalidToken as exc:
            exc.scheme = "DPoP"
            raise
    raise InvalidToken("invalid_request", "use Authorization: Bearer <token> or DPoP <token>")


def challenge(exc: InvalidToken, realm: str, scopes: Iterable[str] = ()) -> str:
    """The `WWW-Authenticate` value for a refusal (RFC 6750 §3, RFC 9449 §7.1)."""
    realm_param = f'realm="{_quoted(realm)}"'
    if isinstance(exc, MissingToken):
        return f'Bearer {realm_param}, DPoP {realm_param}, algs="{DPOP_ALGS}"'
    params = [realm_param, f'error="{exc.error}"']
    if exc.description:
        params.append(f'error_description="{_quoted(exc.description)}"')
    needed = " ".join(scopes)
    if needed:
        params.append(f'scope="{_quoted(needed)}"')
    if exc.scheme == "DPoP":
        params.append(f'algs="{DPOP_ALGS}"')
    return f"{exc.scheme} " + ", ".join(params)


def error_body(exc: InvalidToken) -> dict[str, str]:
    body = {"error": exc.error}
    if exc.description:
        body["error_description"] = exc.description
    return body


def require_token(
    scope: str | Iterable[str] | None = None, *, verifier: TokenVerifier | None = None
) -> Callable[..., Awaitable[VerifiedToken]]:
    """A FastAPI dependency: the request's verified token, holding every scope in `scope`
    (a space-separated string or a list), or an RFC 6750 refusal.

    `verifier` defaults to `app.state.token_verifier`, so an app can build it at startup.
    A token `TokenMiddleware` already verified (`request.state.token`) is reused: a DPoP
    proof is single-use, so verifying it twice would refuse it."""
    from fastapi import HTTPException, Request

    needed = tuple(scope.split()) if isinstance(scope, str) else tuple(scope or ())

    async def dependency(request: Request) -> VerifiedToken:
        chosen = verifier or getattr(request.app.state, VERIFIER_STATE_KEY, None)
        token = getattr(request.state, STATE_KEY, None)
        if not isinstance(token, VerifiedToken):
            if chosen is None:
                raise RuntimeError("require_token needs verifier= or app.state.token_verifier")
            try:
                token = await authenticate(
                    chosen, request.method, request_url(request.scope),
                    request.headers.get("authorization"), request.headers.getlist("dpop"),
                )  # fmt: skip
            except InvalidToken as exc:
                raise HTTPException(
                    exc.status_code,
                    error_body(exc),
                    {"WWW-Authenticate": challenge(exc, chosen.audience)},
                ) from exc
            except SDKError as exc:
                raise HTTPException(503, {"error": "temporarily_unavailable"},
                                    {"Retry-After": "10"}) from exc  # fmt: skip
            setattr(request.state, STATE_KEY, token)
        if not token.has_scopes(*needed):
            refusal = InvalidToken("insufficient_scope", f"this needs {' '.join(needed)}",
                                   scheme="DPoP" if token.dpop_bound else "Bearer")  # fmt: skip
            realm = chosen.audience if chosen is not None else token.audience[0]
            www = challenge(refusal, realm, needed)
            raise HTTPException(403, error_body(refusal), {"WWW-Authenticate": www})
        return token

    return dependency


class TokenMiddleware:
    """Verifies the token of every HTTP request and puts it in `request.state.token`
    (`scope["state"]["token"]`). A request with an invalid token is refused here and never
    reaches the app; one without a token passes with `token = None`, unless `required`."""

    def __init__(self, app: ASGIApp, verifier: TokenVerifier, *, required: bool = False) -> None:
        self.app = app
        self.verifier = verifier
        self.required = required

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authorization = None
        proofs: list[str] = []
        for name, value in scope.get("headers", ()):
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"dpop":
                proofs.append(value.decode("latin-1"))
        state = scope.setdefault("state", {})
        if authorization is None and not self.required:
            state[STATE_KEY] = None
            await self.app(scope, receive, send)
            return
        try:
            state[STATE_KEY] = await authenticate(
                self.verifier, scope["method"], request_url(scope), authorization, proofs
            )
        except InvalidToken as exc:
            www = challenge(exc, self.verifier.audience)
            await _respond(send, exc.status_code, error_body(exc), {"WWW-Authenticate": www})
            return
        except SDKError:
            await _respond(send, 503, {"error": "temporarily_unavailable"}, {"Retry-After": "10"})
            return
        await self.app(scope, receive, send)


async def _respond(send: Send, status: int, body: dict[str, str], headers: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
           (b"cache-control", b"no-store")]  # fmt: skip
    raw += [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def _quoted(text: str) -> str:
    """A value safe inside a quoted-string: no quotes, backslashes or control characters."""
    return "".join(c for c in text if c.isprintable() and c not in '"\\')
