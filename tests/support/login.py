"""Drive `/oauth/authorize` the way a browser would — GET, sign-in form, consent form — with
httpx and a PKCE pair, and read the answer off the redirect. No ValetKey code is used."""

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from html import unescape
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

_HIDDEN = re.compile(r'<input type="hidden" name="(q|csrf)" value="([^"]*)">')


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


@dataclass
class Browser:
    """A cookie jar and the last page; `follow` never leaves the server."""

    base_url: str
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.base_url, follow_redirects=False, timeout=30)

    def open(self, params: dict[str, str]) -> httpx.Response:
        return self.client.get("/oauth/authorize?" + urlencode(params))

    def submit(self, page: httpx.Response, **fields: str) -> httpx.Response:
        hidden = dict(_HIDDEN.findall(page.text))
        form = {"q": unescape(hidden["q"]), "csrf": unescape(hidden["csrf"]), **fields}
        return self.client.post("/oauth/authorize", data=form)

    def close(self) -> None:
        self.client.close()


def answer(response: httpx.Response) -> dict[str, str]:
    """The query parameters of the redirect back to the client."""
    assert response.status_code == 303, (response.status_code, response.text[:500])
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return {k: v[0] for k, v in query.items()}


@dataclass
class Authorization:
    code: str
    verifier: str
    redirect_uri: str
    answer: dict[str, str]


def authorize(
    base_url: str,
    client_id: str,
    redirect_uri: str,
    email: str,
    password: str,
    *,
    scope: str | None = None,
    resource: str | None = None,
    consent: bool = True,
    extra: dict[str, str] | None = None,
) -> Authorization:
    """Sign in and (for an agent without consent on file) allow; returns the code and the
    PKCE verifier."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(8)
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
              "state": state, "code_challenge": challenge, "code_challenge_method": "S256",
              **({"scope": scope} if scope else {}), **({"resource": resource} if resource else {}),
              **(extra or {})}  # fmt: skip
    browser = Browser(base_url)
    try:
        page = browser.open(params)
        assert page.status_code == 200, page.text[:500]
        after = browser.submit(page, action="login", email=email, password=password)
        if consent and after.status_code != 303:  # no consent on file yet: the screen
            assert after.status_code == 200 and "Allow this agent?" in after.text, after.text[:500]
            after = browser.submit(after, action="allow")
        got = answer(after)
    finally:
        browser.close()
    assert got["state"] == state
    return Authorization(got["code"], verifier, redirect_uri, got)
