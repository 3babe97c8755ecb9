"""A test-only reverse proxy on 127.0.0.1 that adds `Authorization: Bearer <token>` to every
request it forwards to ValetKey, and changes nothing else.

Why: the conformance runner's server mode connects with a bare MCP client — no way to pass a
header or a token, and its OAuth flows exist only in client mode (where the suite plays the
authorization server). ValetKey's `/mcp` rightly answers that client 401. Rather than
weaken `/mcp` for tests, the suite talks to this proxy, which plays "an MCP client that holds
an agent token for `{issuer}/mcp`" for it. Method, path, query, body and every other header —
`Host` and `Origin` included, so the DNS-rebinding scenario sees ValetKey's own answer — go
through as they came; status, headers and body come back as ValetKey sent them (responses
are buffered: `/mcp` answers JSON, never a stream)."""

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

# RFC 9110 §7.6.1 hop-by-hop fields, and the framing that is recomputed on the way back.
_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
        "upgrade", "content-length"}  # fmt: skip


def _handler(target: str, token: str, client: httpx.Client) -> type[BaseHTTPRequestHandler]:
    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = [(k, v) for k, v in self.headers.items()
                       if k.lower() not in _HOP and k.lower() != "authorization"]  # fmt: skip
            headers.append(("Authorization", f"Bearer {token}"))
            upstream = client.request(self.command, target + self.path, headers=headers,
                                      content=body)  # fmt: skip
            payload = upstream.content  # decoded: drop content-encoding too
            self.send_response(upstream.status_code)
            for key, value in upstream.headers.multi_items():
                if key.lower() not in _HOP and key.lower() != "content-encoding":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_OPTIONS = do_HEAD = _forward

        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

    return Forward


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up mid-exchange (the suite's client closes its connections as
        it likes) is no error of the proxy's; anything else is reported as usual."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextmanager
def bearer_proxy(target: str, token: str) -> Iterator[str]:
    """Forward `http://127.0.0.1:PORT/...` to `target/...` with the token; yields the base URL."""
    with httpx.Client(timeout=60, follow_redirects=False) as client:
        server = _Server(("127.0.0.1", 0), _handler(target, token, client))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)
