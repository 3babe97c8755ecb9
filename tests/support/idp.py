"""A stand-in company IdP: an EC key pair, its JWKS served on 127.0.0.1, assertions signed
with PyJWT (a library independent of ValetKey's)."""

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec


class FakeIdP:
    def __init__(self, base_url: str, issuer: str) -> None:
        self.base_url = base_url
        self.issuer = issuer
        self.key = ec.generate_private_key(ec.SECP256R1())
        # Unique per IdP: ports are reused within a test session, and ValetKey caches a key
        # set by its URI, so two IdPs must never share a URI or a key id.
        self.kid = "idp-key-" + secrets.token_hex(4)
        self.jwks_path = "/jwks/" + secrets.token_hex(4)
        self.fetches = 0

    @property
    def jwks_uri(self) -> str:
        return self.base_url + self.jwks_path

    def jwks(self) -> dict[str, Any]:
        public = jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": self.kid, "alg": "ES256", "use": "sig"}]}

    def assertion(self, email: str, audience: str = "valetkey", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "sub": email, "email": email, "aud": audience,
                "iat": now, "exp": now + 600, **claims}  # fmt: skip
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.key, algorithm="ES256", headers={"kid": self.kid})


@contextmanager
def running_idp(issuer: str = "https://idp.acme.example") -> Iterator[FakeIdP]:
    holder: dict[str, FakeIdP] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            idp = holder["idp"]
            idp.fetches += 1
            body = json.dumps(idp.jwks()).encode()
            self.send_response(200 if self.path == idp.jwks_path else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["idp"] = FakeIdP(f"http://127.0.0.1:{server.server_address[1]}", issuer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["idp"]
    finally:
        server.shutdown()
        server.server_close()
