"""The sign-in session that `/oauth/authorize` and the console share, and what guards it.

`vk_session` (HttpOnly, SameSite=Lax, Secure when the issuer is https, path `/`) names the
user and their tenant, HMAC-signed with a key derived from the master key, so every node
accepts it. It dies at its expiry, when the password changes, when the user is deactivated
and when they sign out (the user row records from when on sessions count). A page never
holds a secret; the password goes straight to argon2id and nowhere else.
"""

import base64
import hashlib
import hmac
import secrets
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from valetkey.identity.models import User
from valetkey.policy.limits import Charge
from valetkey.runtime import Runtime

SESSION_COOKIE = "vk_session"
CSRF_COOKIE = "vk_csrf"
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _session_key(runtime: Runtime) -> bytes:
    return runtime.master_key.derive("session-cookie")


def mac(runtime: Runtime, *parts: str) -> str:
    data = "\x00".join(parts).encode()
    return _b64(hmac.new(_session_key(runtime), data, hashlib.sha256).digest())


def seal(runtime: Runtime, purpose: str, data: dict[str, Any]) -> str:
    """A cookie value carrying `data`, readable by the browser but signed (HMAC, bound to
    `purpose`): the session, the company sign-in in flight."""
    payload = _b64(orjson.dumps(data))
    return payload + "." + mac(runtime, purpose, payload)


def unseal(runtime: Runtime, purpose: str, raw: str) -> dict[str, Any] | None:
    """What `seal` put in, if the value is genuine; else None."""
    payload, _, tag = raw.partition(".")
    if not payload or not hmac.compare_digest(
        tag.encode(), mac(runtime, purpose, payload).encode()
    ):
        return None
    try:
        data = orjson.loads(_unb64(payload))
    except (ValueError, TypeError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def secure_cookies(runtime: Runtime) -> bool:
    return runtime.settings.issuer.startswith("https://")


async def _password_generation(runtime: Runtime, user_id: str) -> str:
    """Changes whenever the password does, so a new password ends every open session."""
    stored = await runtime.identity_store.password_hash(user_id)
    return mac(runtime, "password", stored or "")[:22]


async def sign_session(runtime: Runtime, user: User, now: float) -> str:
    expires = int(now) + runtime.settings.session_ttl
    generation = await _password_generation(runtime, user.id)
    return seal(runtime, "session", {"u": user.id, "t": user.tenant_id, "e": expires,
                                     "g": generation, "i": round(now, 6)})  # fmt: skip


def set_session(response: Response, runtime: Runtime, value: str) -> None:
    """Path `/`: the authorize endpoint, the connect flow and the console all read it."""
    response.set_cookie(
        SESSION_COOKIE, value, max_age=runtime.settings.session_ttl, httponly=True,
        samesite="lax", secure=secure_cookies(runtime), path="/",
    )  # fmt: skip


def clear_session(response: Response, runtime: Runtime) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=secure_cookies(runtime)
    )


def session_payload(request: Request) -> str:
    """The signed part of the request's session cookie ('' when none): what a console form's
    CSRF token is bound to."""
    return request.cookies.get(SESSION_COOKIE, "").partition(".")[0]


async def session_user(request: Request, runtime: Runtime, tenant_id: str | None) -> User | None:
    """The signed-in user (of this tenant, when one is given), if the cookie is genuine and
    fresh, the password has not changed since, they have not signed out since, and the
    user is active."""
    data = unseal(runtime, "session", request.cookies.get(SESSION_COOKIE, ""))
    if data is None:
        return None
    try:
        user_id, expires, issued = str(data["u"]), float(data["e"]), float(data.get("i", 0))
    except (ValueError, TypeError, KeyError):
        return None
    if (tenant_id is not None and data.get("t") != tenant_id) or expires <= runtime.clock.now():
        return None
    user = await runtime.delegation_store.user_by_id(user_id)
    if user is None or user.status != "active" or user.tenant_id != data.get("t"):
        return None
    if issued <= user.signed_out_at:
        return None
    generation = await _password_generation(runtime, user.id)
    return user if hmac.compare_digest(str(data.get("g", "")), generation) else None


async def signed_in_user(request: Request, runtime: Runtime) -> User | None:
    """The user of the request's sign-in cookie, whatever their tenant."""
    return await session_user(request, runtime, None)


def browser_csrf(request: Request) -> str:
    """The browser's CSRF cookie value (a new random one when it has none): double-submitted
    by forms shown before anyone is signed in."""
    token = request.cookies.get(CSRF_COOKIE, "")
    return token if len(token) == 43 else secrets.token_urlsafe(32)


def form_token(runtime: Runtime, cookie: str, bound_to: str) -> str:
    """What a form must send back: an HMAC of the cookie and what the form is for, so a
    cookie planted from a sibling domain is useless without the server's key."""
    return mac(runtime, "csrf", cookie, bound_to)


def form_token_ok(runtime: Runtime, cookie: str, bound_to: str, sent: str) -> bool:
    expected = form_token(runtime, cookie, bound_to)
    return bool(cookie) and hmac.compare_digest(expected.encode(), sent.encode())


def set_csrf(response: Response, runtime: Runtime, token: str, path: str) -> Response:
    response.set_cookie(
        CSRF_COOKIE, token, httponly=True, samesite="strict", secure=secure_cookies(runtime),
        path=path,
    )  # fmt: skip
    return response


# reading forms --------------------------------------------------------------------------
class TooLarge(Exception):
    """The request body is larger than the form it is for could be."""


async def capped_body(request: Request, limit: int) -> bytes:
    """The body, read only up to `limit` bytes: a sign-in form is small, and nobody may
    make the server buffer an unbounded upload before being signed in."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


# throttling --------------------------------------------------------------------------------
MAX_LOGIN_FAILURES = 10  # per account
MAX_ADDRESS_FAILURES = 100  # per client address and tenant: password spraying
LOGIN_WINDOW = 900


def _window(now: float) -> tuple[int, float]:
    start = int(now // LOGIN_WINDOW) * LOGIN_WINDOW
    return start, float(start + LOGIN_WINDOW)


def _digest(*parts: str) -> str:
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:32]


async def reserve_attempt(
    runtime: Runtime, tenant_id: str, email: str, address: str
) -> tuple[float, list[Charge]]:
    """Count a sign-in attempt before the password is checked, atomically against the
    limits (this 15-minute window and the last, so a lock never resets at a boundary):
    parallel guesses cannot slip past it, on any node. Returns (seconds to wait, 0 when it
    may go on; the charges to refund when the password turns out right). The address and
    the account are hashed."""
    now = runtime.clock.now()
    start, end = _window(now)
    keys = [(f"login:{_digest(tenant_id, email)}", MAX_LOGIN_FAILURES),
            (f"login-from:{_digest(tenant_id, address)}", MAX_ADDRESS_FAILURES)]  # fmt: skip
    usage = runtime.usage_store
    before = await usage.read_counters(tenant_id, [(k, start - LOGIN_WINDOW) for k, _ in keys])
    charges = [
        Charge(key, start, end, 1, limit - before.get((key, start - LOGIN_WINDOW), 0))
        for key, limit in keys
    ]
    if await usage.charge(tenant_id, charges) is not None:
        return end - now, []
    return 0.0, charges


async def refund_attempt(runtime: Runtime, tenant_id: str, charges: list[Charge]) -> None:
    """A right password: the attempt does not count against anyone."""
    refunds = [Charge(c.key, c.window_start, c.expires_at, -1, None) for c in charges]
    await runtime.usage_store.charge(tenant_id, refunds)


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


async def check_password(
    runtime: Runtime, cid: str, tenant_id: str | None, email: str, password: str, address: str
) -> tuple[User | None, float]:
    """One sign-in attempt: (the user, 0) when the password is right; (None, seconds to
    wait) when the account or the address is locked; (None, 0) when it is wrong. Unknown
    organizations cost the same argon2id work as known ones."""
    if tenant_id is None:
        await runtime.identity(cid).check_login("ten_unknown", email, password)
        return None, 0.0
    wait, charges = await reserve_attempt(runtime, tenant_id, email, address)
    if wait:
        return None, wait
    user = await runtime.identity(cid).check_login(tenant_id, email, password)
    if user is not None:
        await refund_attempt(runtime, tenant_id, charges)
    return user, 0.0
