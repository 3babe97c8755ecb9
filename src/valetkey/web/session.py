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


def secure_cookies(runtime: Runtime) -> bool:
    return runtime.settings.issuer.startswith("https://")


async def _password_generation(runtime: Runtime, user_id: str) -> str:
    """Changes whenever the password does, so a new password ends every open session."""
    stored = await runtime.identity_store.password_hash(user_id)
    return mac(runtime, "password", stored or "")[:22]


async def sign_session(runtime: Runtime, user: User, now: float) -> str:
    expires = int(now) + runtime.settings.session_ttl
    generation = await _password_generation(runtime, user.id)
    payload = _b64(orjson.dumps(
        {"u": user.id, "t": user.tenant_id, "e": expires, "g": generation, "i": round(now, 6)}
    ))  # fmt: skip
    return payload + "." + mac(runtime, "session", payload)


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
    raw = request.cookies.get(SESSION_COOKIE, "")
    payload, _, tag = raw.partition(".")
    if not payload or not hmac.compare_digest(
        tag.encode(), mac(runtime, "session", payload).encode()
    ):
        return None
    try:
        data = orjson.loads(_unb64(payload))
        user_id, expires, issued = str(data["u"]), float(data["e"]), float(data.get("i", 0))
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
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


# throttling --------------------------------------------------------------------------------
MAX_LOGIN_FAILURES = 10
LOGIN_WINDOW = 900


def login_throttle(tenant_id: str, email: str, now: float) -> tuple[str, int, float]:
    """The counter of failed sign-ins for one account in this 15-minute window (the lock
    counts this window and the last, so it never resets at a boundary): exact on every
    node (the same counters as agents' limits); the address is hashed."""
    start = int(now // LOGIN_WINDOW) * LOGIN_WINDOW
    digest = hashlib.sha256(f"{tenant_id}:{email}".encode()).hexdigest()[:32]
    return f"login:{digest}", start, float(start + LOGIN_WINDOW)


async def login_locked(runtime: Runtime, tenant_id: str, email: str) -> float:
    """Seconds until this account may try again (0 when it may now)."""
    now = runtime.clock.now()
    key, start, end = login_throttle(tenant_id, email, now)
    seen = await runtime.usage_store.read_counters(
        tenant_id, [(key, start), (key, start - LOGIN_WINDOW)]
    )
    return end - now if sum(seen.values()) >= MAX_LOGIN_FAILURES else 0.0


async def count_failure(runtime: Runtime, tenant_id: str, email: str) -> None:
    key, start, end = login_throttle(tenant_id, email, runtime.clock.now())
    await runtime.usage_store.charge(tenant_id, [Charge(key, start, end, 1, None)])
