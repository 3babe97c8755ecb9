"""The official `mcp` SDK's client-side OAuth (`OAuthClientProvider`) pointed at ValetKey, with
a person at the browser: the redirect handler signs a user in and answers the consent screen
over HTTP (`tests.support.login.Browser`), and the callback handler hands the SDK the code
and state read off the redirect. No ValetKey code is used.

Also: client ID metadata documents served over https on 127.0.0.1 with a self-signed
certificate (the SDK accepts only https client id URLs; the ValetKey server under test
trusts the certificate through `SSL_CERT_FILE` and allow-lists 127.0.0.1)."""

import asyncio
import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import httpx2
import mcp_types as types
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, OAuthFlowError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from tests.support.login import Browser, answer


@dataclass
class MemoryStorage:
    """The SDK's `TokenStorage`, in memory; what a desktop client would keep on disk."""

    tokens: OAuthToken | None = None
    client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class Person:
    """The user at the browser. `redirect` (the SDK's redirect handler) opens the
    authorization URL, signs in and answers the consent screen; `callback` (the callback
    handler) returns what the redirect back to the client carried.

    `extra` is appended to the authorization URL the SDK built (the SDK has no way to add
    parameters such as `authorization_details`). `approve(client_id)` is the admin: called
    when ValetKey says the client awaits approval, after which the page is opened again."""

    base_url: str
    email: str
    password: str
    consent: str = "allow"
    extra: dict[str, str] = field(default_factory=dict)
    approve: Callable[[str], None] | None = None
    opened: list[dict[str, str]] = field(default_factory=list)  # the SDK's authorize params
    pages: list[str] = field(default_factory=list)  # every HTML page seen (waiting, consent)
    answers: list[dict[str, str]] = field(default_factory=list)

    async def redirect(self, url: str) -> None:
        await anyio.to_thread.run_sync(self._drive, url)  # the CLI runs its own event loop

    async def callback(self) -> AuthorizationCodeResult:
        got = self.answers[-1]
        if "code" not in got:  # an error came back to the client (RFC 6749 §4.1.2.1)
            raise OAuthFlowError(f"authorization failed: {got.get('error')}: "
                                 f"{got.get('error_description')}")  # fmt: skip
        return AuthorizationCodeResult(code=got["code"], state=got.get("state"), iss=got.get("iss"))

    def _drive(self, url: str) -> None:
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}" == self.base_url, url
        assert parts.path == "/oauth/authorize", url
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.opened.append(params)
        browser = Browser(self.base_url)
        try:
            page = browser.open({**params, **self.extra})
            if page.status_code == 400 and "awaits an admin" in page.text and self.approve:
                self.pages.append(page.text)
                self.approve(params["client_id"])
                page = browser.open({**params, **self.extra})
            if page.status_code == 303:  # refused, back to the client with an error
                self.answers.append(answer(page))
                return
            assert page.status_code == 200 and "Sign in" in page.text, page.text[:500]
            after = browser.submit(page, action="login", email=self.email, password=self.password)
            if after.status_code == 200 and "Allow this agent?" in after.text:
                self.pages.append(after.text)
                after = browser.submit(after, action=self.consent)
            self.answers.append(answer(after))
        finally:
            browser.close()


@dataclass(frozen=True)
class Exchange:
    """One HTTP request the MCP client made (MCP, discovery, registration, token)."""

    method: str
    url: str
    status: int
    headers: dict[str, str]  # the response's, lower-case names
    authorization: str | None  # the request's Authorization header


@dataclass
class McpOAuthClient:
    """An MCP client (the official SDK, streamable HTTP) that gets its own ValetKey token:
    its `OAuthClientProvider` discovers, registers (dynamically, or with
    `client_metadata_url` when the server supports metadata documents), sends the person to
    sign in, and keeps the tokens in `storage`. Each operation is a new client process
    reading the same storage, as a desktop client restarting would."""

    url: str
    person: Person
    metadata: OAuthClientMetadata
    client_metadata_url: str | None = None
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    exchanges: list[Exchange] = field(default_factory=list)

    async def _run(self, op: str, *args: Any, **kw: Any) -> Any:
        provider = OAuthClientProvider(
            server_url=self.url,
            client_metadata=self.metadata.model_copy(deep=True),
            storage=self.storage,
            redirect_handler=self.person.redirect,
            callback_handler=self.person.callback,
            client_metadata_url=self.client_metadata_url,
        )

        async def record(response: httpx2.Response) -> None:
            request = response.request
            self.exchanges.append(Exchange(
                request.method, str(request.url), response.status_code,
                {k.lower(): v for k, v in response.headers.items()},
                request.headers.get("authorization"),
            ))  # fmt: skip

        async with (
            httpx2.AsyncClient(auth=provider, timeout=30, event_hooks={"response": [record]}) as h,
            Client(streamable_http_client(self.url, http_client=h)) as client,
        ):
            return await getattr(client, op)(*args, **kw)

    def tools(self) -> dict[str, types.Tool]:
        listed = asyncio.run(self._run("list_tools"))
        return {t.name: t for t in listed.tools}

    def call(self, name: str, arguments: dict[str, Any], **kw: Any) -> types.CallToolResult:
        result: types.CallToolResult = asyncio.run(self._run("call_tool", name, arguments, **kw))
        return result

    @property
    def access_token(self) -> str:
        assert self.storage.tokens is not None
        return self.storage.tokens.access_token


# client ID metadata documents over https ---------------------------------------------------
def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "documents.crt", directory / "documents.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Documents:
    """JSON documents served over https on 127.0.0.1; `fetches` counts GETs per path."""

    base: str
    pages: dict[str, bytes] = field(default_factory=dict)
    fetches: dict[str, int] = field(default_factory=dict)

    def serve(self, path: str, document: dict[str, Any]) -> str:
        self.pages[path] = json.dumps(document).encode()
        return self.base + path


@contextmanager
def https_documents(cert: Path, key: Path) -> Iterator[Documents]:
    docs = Documents("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            docs.fetches[self.path] = docs.fetches.get(self.path, 0) + 1
            body = docs.pages.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body or b"{}")))
            self.end_headers()
            self.wfile.write(body or b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    docs.base = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield docs
    finally:
        server.shutdown()
        server.server_close()
