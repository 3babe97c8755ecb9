#!/usr/bin/env python3
"""MCP gateway overhead: `tools/call get_deal` on an MCP server directly and through `/mcp`.

Starts its own ValetKey exactly as bench/token_issuance.py does (`valetkey serve`, 127.0.0.1
only, a temporary data dir, SQLite by default or `--database-url` for PostgreSQL) and, in a
separate process of this script, an upstream MCP server built like the tests' one
(tests/support/mcp_upstream.py): the official `mcp` SDK's low-level `Server`, stateless
streamable HTTP with JSON responses, under uvicorn (httptools, uvloop when available) on
127.0.0.1. Its one tool, `get_deal` (readOnlyHint), answers a ~200-byte JSON deal as text;
every `/mcp` request must carry `Authorization: Bearer <its platform's access token>`
(else 401), and the same process answers `POST /token` (`grant_type=refresh_token`, client
authentication checked) with that token. With the CLI the bench sets up what a gateway call
needs: a tenant and a sponsor, the vault provider `crm` (token URL: the upstream's
`/token`), the MCP upstream `crm` (`mcp upstreams add crm --url …/mcp --provider crm`, with
the resource template `crm:deals/{deal_id}` on `get_deal`), an agent with `mcp:read`, the
agent's own connection (`connections import --agent … --refresh-token-stdin`), and a
`client_credentials` token for `resource={issuer}/mcp`, `scope=mcp:read`.

The load is raw HTTP: one JSON-RPC `tools/call` POSTed again and again on keep-alive
connections, as an MCP client of the 2026-07-28 protocol sends it (`Content-Type:
application/json`, `Accept: application/json, text/event-stream`, `MCP-Protocol-Version`,
`Mcp-Method`, `Mcp-Name`, the per-request `_meta` envelope): `POST {upstream}/mcp`
`get_deal` with the platform token (directly), and `POST {issuer}/mcp` `crm__get_deal`
with the agent's token (through the gateway). An answer counts only when it is HTTP 200
and holds the deal; anything else is an error (a refusal is HTTP 200 with `isError`).

Before the load it checks one call of each path (the upstream refuses a call without its
token; directly and through the gateway, the exact deal as the tool's text; the gateway's
first call refreshed the connection once) and records what the first two gateway calls
asked of the upstream. Then, on the same servers in the same run, at concurrency 1 and 16: the
upstream directly, then the same tool through the gateway, each for a fixed time. It
prints requests/s, p50/p90/p99 latency and errors for each, and for the gateway the added
latency (gateway percentile minus direct), the throughput ratio gateway/direct, the
gateway's CPU per call, and the upstream's requests, connections and CPU per gateway call.
The load generator, the gateway's workers and the upstream share the machine's cores: the
report says who used how much. Afterwards the server is killed (SIGKILL) and the audit log
must hold one successful `mcp.tool_called` (and one `decision.made`) per gateway answer.

The load generator is `wrk` with a Lua script (checking each answer's body) when it is
installed, else asyncio over raw HTTP/1.1 keep-alive connections. Every phase is bounded in
time and the script stops by itself (the upstream process exits when this script does).

    .venv/bin/python bench/mcp.py                      # SQLite, 2 workers, 10 s per phase
    .venv/bin/python bench/mcp.py --workers 1 --json
    .venv/bin/python bench/mcp.py --database-url "$VALETKEY_TEST_PG_URL"

`--database-url`, `--reuse-database`, `--generator`, `--wait-quiet`, `--output FILE` behave
as in token_issuance.py; `--concurrency N` is the high concurrency (1 is always measured
too); `--profile DIR` records py-spy on each worker during the gateway phase at the high
concurrency — every thread on a CPU, not only the GIL holder (`--gil` would miss OpenSSL
and SQLite's C code) — and summarises it by layer, by step of the call and by function.
See docs/performance.md for the method and the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import functools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

# This file has the SDK's name: its directory goes behind site-packages, so that `import
# mcp` (the upstream process) finds the SDK, not this script (bench/gateway.py puts it first
# again when imported).
BENCH_DIR = Path(__file__).resolve().parent
sys.path.append(str(BENCH_DIR))
import gateway as http_gateway  # noqa: E402
import token_issuance as base  # noqa: E402

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR] + [str(BENCH_DIR)]

PROVIDER = "crm"  # the vault provider and the MCP upstream's name
TOOL = "get_deal"
GATEWAY_TOOL = f"{PROVIDER}__{TOOL}"
SCOPE = "mcp:read"
CLIENT_ID = "valetkey-bench"
PROTOCOL = "2026-07-28"  # the SDK's LATEST_MODERN_VERSION (checked in main)
DEAL = http_gateway.DEAL.decode()  # the tool's text, ~200 bytes of JSON
MARKER = "Initech renewal"  # in every good answer's body (the deal, JSON-escaped)

# Layers of the /mcp path, matched on each sample's innermost frames first.
LAYERS = [
    ("TLS contexts (ssl: the CA bundle loaded)", ("ssl_context", "(ssl.py:", "truststore/")),
    ("token verification (joserfc)", ("joserfc/",)),
    ("JSON schema (jsonschema, referencing)", ("jsonschema", "referencing/")),
    ("pydantic (MCP types: validation, serialisation)", ("pydantic", "mcp_types/")),
    ("HTTP client to the upstream (httpx2, httpcore2, h11)", ("httpx2/", "httpcore2/", "h11/")),
    ("MCP SDK client side (mcp.client)", ("mcp/client/",)),
    ("MCP SDK server side (mcp.server)", ("mcp/server/",)),
    ("MCP SDK shared (JSON-RPC dispatch, inbound checks)", ("mcp/shared/", "mcp/types")),
    ("anyio (task groups, memory streams, cancel scopes)", ("anyio/",)),
    ("vault (valetkey.vault)", ("valetkey/vault/",)),
    ("Cedar (cedarpy)", ("cedarpy/",)),
    ("SQLite driver (sqlite3)", ("sqlite3/", "aiosqlite/")),
    ("PostgreSQL driver (asyncpg)", ("asyncpg/",)),
    ("SQLAlchemy", ("sqlalchemy/", "greenlet")),
    ("ValetKey storage (reads, counters, audit inserts)", ("valetkey/storage/",)),
    ("audit chain and writer (valetkey.audit)", ("valetkey/audit/",)),
    ("decision logic (valetkey.policy)", ("valetkey/policy/",)),
    ("ValetKey MCP gateway (valetkey.mcp, web.mcp)", ("valetkey/mcp/", "valetkey/web/mcp")),
    ("ValetKey web and OAuth (token checks)", ("valetkey/",)),
    ("HTTP server (uvicorn, httptools)", ("uvicorn/", "httptools")),
    ("Starlette", ("starlette/",)),
    ("event loop, asyncio, stdlib", ("asyncio/", "uvloop", "concurrent/", "threading")),
]

# The steps of one `/mcp` tools/call (web/mcp.py, then mcp/gateway.py, in order), matched on
# each sample's outermost frame that names one: a step includes everything it awaits.
FORWARD = "forward"
STEPS = [
    ("token check (v1.token_from)", "token_from", "web/v1.py"),
    ("caller (Authorizer.caller)", "caller", "policy/authorizer.py"),
    ("upstreams (Catalog.upstreams, cached)", "upstreams", "mcp/catalog.py"),
    ("credential (provider, connection lookup)", "_credential", "mcp/gateway.py"),
    ("tool list (Catalog.tools, cached 60 s per process)", "tools", "mcp/catalog.py"),
    ("action registration check (Catalog.registered)", "registered", "mcp/catalog.py"),
    ("intent (tools.intent_for)", "intent_for", "mcp/tools.py"),
    ("granted-approval lookup (_approval_for)", "_approval_for", "mcp/gateway.py"),
    ("decision (limits, counters, Cedar, decision.made)", "decide", "policy/authorizer.py"),
    (FORWARD, "_forward", "mcp/gateway.py"),
    ("mcp.tool_called audit (queueing it)", "_record", "mcp/gateway.py"),
]
# The forward to the upstream (UpstreamClient.call_tool), by what its stack holds.
FORWARD_PARTS = [
    (
        "forward: a new httpx2.AsyncClient per call: its TLS context (the CA bundle loaded)",
        ("ssl_context", "(ssl.py:", "truststore/"),
    ),
    ("forward: a new httpx2.AsyncClient per call: the rest", ("httpx2/_client.py",)),
    (
        "forward: the SDK client's output-schema check (a tools/list to the upstream)",
        ("validate_tool_result", "_absorb_tool_listing", "list_tools"),
    ),
]
FORWARD_REST = "forward: the SDK client session and tools/call (connect, POST, parse, close)"
TRANSPORT = "forward: the SDK client's transport tasks (httpx2 POSTs, response parsing)"
SERVER = "the SDK server and /mcp glue (request parsing, validation, dispatch, response)"


# ----------------------------------------------------------------------------------------
# the upstream: a separate process, the MCP SDK's server under uvicorn
class _UpstreamApp:
    """`/mcp` (the SDK's app, behind a token check that counts what it sees), `/token`
    (refresh grant) and `/_bench/stats`, as one ASGI app."""

    def __init__(self, config: dict[str, str]) -> None:
        self.bearer = b"Bearer " + config["access_token"].encode()
        self.access_token = config["access_token"]
        self.refresh_token = config["refresh_token"]
        self.client = (config["client_id"], config["client_secret"])
        self.counts: dict[str, int] = {"refused": 0, "token_requests": 0, "refresh_grants": 0}
        self.clients: set[tuple[str, int]] = set()  # the gateway's connections, since read
        self.inner = _mcp_server().streamable_http_app(stateless_http=True, json_response=True)

    def count(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan: the SDK's session manager
            await self.inner(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path == "/mcp":
            headers = dict(scope["headers"])
            via = "gateway" if b"x-agent-id" in headers else "direct"
            self.count(f"{via} {headers.get(b'mcp-method', b'(no Mcp-Method)').decode()}")
            if via == "gateway" and scope.get("client"):
                self.clients.add(tuple(scope["client"]))
            if headers.get(b"authorization") != self.bearer:
                self.count("refused")
                challenge = [(b"www-authenticate", b'Bearer error="invalid_token"')]
                await _answer(send, 401, b'{"error":"invalid_token"}', challenge)
                return
            await self.inner(scope, receive, send)
        elif path == "/token" and method == "POST":
            await _answer(send, *self.token(dict(scope["headers"]), await _body(receive)))
        elif path == "/_bench/stats":
            stats = {**self.counts, "gateway_connections": len(self.clients)}
            self.clients.clear()
            await _answer(send, 200, json.dumps(stats).encode())
        else:
            await _answer(send, 404, b'{"error":"not_found"}')

    def token(self, headers: dict[bytes, bytes], body: bytes) -> tuple[int, bytes]:
        self.count("token_requests")
        form = dict(urllib.parse.parse_qsl(body.decode("latin-1")))
        client = (form.get("client_id"), form.get("client_secret"))
        basic = headers.get(b"authorization", b"")
        if basic[:6].lower() == b"basic ":
            with contextlib.suppress(binascii.Error, ValueError):
                user, _, password = base64.b64decode(basic[6:].strip()).decode().partition(":")
                client = (urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password))
        if client != self.client:
            return 401, b'{"error":"invalid_client"}'
        if form.get("grant_type") != "refresh_token":
            return 400, b'{"error":"unsupported_grant_type"}'
        if form.get("refresh_token") != self.refresh_token:
            return 400, b'{"error":"invalid_grant"}'
        self.count("refresh_grants")
        issued = {"access_token": self.access_token, "token_type": "Bearer",
                  "expires_in": 3600, "refresh_token": self.refresh_token}  # fmt: skip
        return 200, json.dumps(issued).encode()


def _mcp_server() -> Any:
    import mcp_types as types
    from mcp.server.lowlevel import Server

    deal_tool = types.Tool(
        name=TOOL,
        description="Read a deal.",
        input_schema={
            "type": "object",
            "properties": {"deal_id": {"type": "string", "description": "The deal's id."}},
            "required": ["deal_id"],
        },
        annotations=types.ToolAnnotations(read_only_hint=True),
    )
    found = [types.TextContent(type="text", text=DEAL)]
    missing = [types.TextContent(type="text", text="no such deal")]

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[deal_tool])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name == TOOL and (params.arguments or {}).get("deal_id") == "42":
            return types.CallToolResult(content=found)
        return types.CallToolResult(content=missing, is_error=True)

    return Server("crm-bench", version="1.0", on_list_tools=list_tools, on_call_tool=call_tool)


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(
    send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


def upstream_main() -> int:
    import uvicorn

    config = json.loads(sys.stdin.readline())
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((base.HOST, 0))
    server = uvicorn.Server(
        uvicorn.Config(
            _UpstreamApp(config),
            loop="uvloop" if http_gateway._has_uvloop() else "asyncio",
            http="httptools",
            ws="none",
            lifespan="on",
            log_level="warning",
            access_log=False,
            backlog=1024,
        )
    )

    def supervise() -> None:
        while not server.started:
            time.sleep(0.02)
        print(sock.getsockname()[1], flush=True)
        sys.stdin.read()  # the bench holds our stdin open: its end (however it ends) ends us
        server.should_exit = True

    threading.Thread(target=supervise, daemon=True).start()
    server.run(sockets=[sock])
    return 0


class Upstream(base.StandIn):
    """The upstream process, seen from the bench."""

    def __init__(self, workdir: Path) -> None:
        self.access_token = "plat_at_" + secrets.token_urlsafe(24)
        self.refresh_token = "plat_rt_" + secrets.token_urlsafe(24)
        self.client_secret = "plat_cs_" + secrets.token_urlsafe(24)
        config = {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "client_id": CLIENT_ID,
            "client_secret": self.client_secret,
        }
        super().__init__("upstream", __file__, "--serve-upstream", workdir, config, 60)

    def stats(self) -> dict[str, int]:
        """Counts so far; `gateway_connections`: the gateway's connections since the last
        read (each distinct client address and port)."""
        with urllib.request.urlopen(self.base + "/_bench/stats", timeout=10) as resp:
            answer: dict[str, int] = json.loads(resp.read())
        return answer

    def stop(self, wait: float = 10) -> None:
        super().stop(wait)


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    keys = sorted(set(before) | set(after))
    moved = {k: after.get(k, 0) - before.get(k, 0) for k in keys if k != "gateway_connections"}
    moved = {k: v for k, v in moved.items() if v}
    moved["gateway_connections"] = after.get("gateway_connections", 0)
    return moved


# ----------------------------------------------------------------------------------------
# requests, set-up and checks
def call_request(token: str, name: str) -> tuple[dict[str, str], str]:
    """Headers and body of one `tools/call` of `name` (deal 42), 2026-07-28 style."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": PROTOCOL,
        "Mcp-Method": "tools/call",
        "Mcp-Name": name,
    }
    meta = {
        "io.modelcontextprotocol/protocolVersion": PROTOCOL,
        "io.modelcontextprotocol/clientInfo": {"name": "valetkey-bench", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    params = {"name": name, "arguments": {"deal_id": "42"}, "_meta": meta}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    return headers, json.dumps(body, separators=(",", ":"))


def post(port: int, headers: dict[str, str], body: str) -> tuple[int, bytes, float]:
    """(status, body, seconds) of one POST /mcp."""
    request = urllib.request.Request(
        f"http://{base.HOST}:{port}/mcp", data=body.encode(), headers=headers, method="POST"
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            status, answer = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, answer = exc.code, exc.read()
    return status, answer, time.perf_counter() - started


def set_up(bench: base.Bench, upstream: Upstream) -> tuple[str, str]:
    """Tenant, sponsor, provider, MCP upstream, agent with `mcp:read` and its own
    connection; the agent's (client_id, client_secret)."""
    cli = functools.partial(http_gateway.cli, bench)
    email = f"ops@{bench.tenant}.example"
    tenant = ["--tenant", bench.tenant]
    cli("tenants", "create", bench.tenant)
    cli("users", "create", email, *tenant, "--role", "admin")
    cli("providers", "add", PROVIDER, *tenant,
        "--authorize-url", upstream.base + "/authorize", "--token-url", upstream.base + "/token",
        "--api-base", upstream.base + "/api", "--client-id", CLIENT_ID, "--client-secret-stdin",
        stdin=upstream.client_secret + "\n")  # fmt: skip
    cli("mcp", "upstreams", "add", PROVIDER, *tenant, "--url", upstream.base + "/mcp",
        "--provider", PROVIDER)  # fmt: skip
    cli("mcp", "tools", "set", PROVIDER, TOOL, *tenant, "--resource", "crm:deals/{deal_id}")
    agent = cli("agents", "create", "mcp-bench", *tenant, "--sponsor", email, "--scope", SCOPE)
    cli("connections", "import", *tenant, "--provider", PROVIDER, "--agent", agent["id"],
        "--refresh-token-stdin", stdin=upstream.refresh_token + "\n")  # fmt: skip
    return agent["client_id"], agent["client_secret"]


def mcp_token(bench: base.Bench, client_id: str, client_secret: str) -> str:
    form = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "resource": f"{bench.env['VALETKEY_ISSUER']}/mcp",
            "scope": SCOPE,
        }
    )
    answer = base._token_once(bench.port, base.client_headers(client_id, client_secret), form)
    return str(answer["access_token"])


def check_answer(what: str, got: tuple[int, bytes, float], gateway: bool) -> float:
    """The call's milliseconds, when it answered 200 with the deal as the tool's text."""
    status, body, seconds = got

    def failed(why: str) -> SystemExit:
        return SystemExit(f"check FAILED: {what} answered {status} {body[:400]!r}: {why}")

    if status != 200:
        raise failed("expected 200")
    try:
        answer = json.loads(body)
    except ValueError:
        raise failed("not JSON") from None
    result = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(result, dict) or result.get("isError"):
        raise failed("expected a tool result without isError")
    texts = [c.get("text") for c in result.get("content", []) if c.get("type") == "text"]
    if texts != [DEAL] or MARKER.encode() not in body:
        raise failed(f"expected the deal as the only text: {DEAL}")
    decision = (result.get("_meta") or {}).get("valetkey/decision_id")
    if gateway and not str(decision or "").startswith("dec_"):
        raise failed("expected _meta valetkey/decision_id")
    return round(seconds * 1000, 2)


def check_paths(bench: base.Bench, upstream: Upstream, token: str) -> dict[str, Any]:
    """One call of each path before the load; anything unexpected stops the bench."""
    direct_headers, direct_body = call_request(upstream.access_token, TOOL)
    gateway_headers, gateway_body = call_request(token, GATEWAY_TOOL)
    bare = {k: v for k, v in direct_headers.items() if k != "Authorization"}
    status, body, _ = post(upstream.port, bare, direct_body)
    if status != 401:
        raise SystemExit(f"check FAILED: the upstream without its token answered {status} {body!r}")
    direct = check_answer("the upstream", post(upstream.port, direct_headers, direct_body), False)
    before = upstream.stats()
    first = check_answer(
        f"the gateway ({GATEWAY_TOOL})", post(bench.port, gateway_headers, gateway_body), True
    )
    middle = upstream.stats()
    second = check_answer(
        "the gateway, again", post(bench.port, gateway_headers, gateway_body), True
    )
    after = upstream.stats()
    cold, warm = _delta(before, middle), _delta(middle, after)
    if (
        cold.get("refresh_grants") != 1
        or cold.get("gateway tools/call") != 1
        or warm.get("gateway tools/call") != 1
    ):
        raise SystemExit(
            f"check FAILED: the gateway's first call asked the upstream {cold}, the second "
            f"{warm}; expected one refresh grant, and one tools/call each"
        )
    return {
        "direct_ms": direct,
        "gateway_first_ms": first,  # the refresh, the era probe, the tool list, the actions
        "gateway_second_ms": second,
        # A worker's first call also probes the upstream's era and lists its tools (then
        # cached); with several workers the second call may be another worker's first.
        "upstream_requests_first_call": cold,
        "upstream_requests_second_call": warm,
        "body_bytes": len(DEAL),
        "protocol": PROTOCOL,
    }


# ----------------------------------------------------------------------------------------
# load generators: token_issuance.py's, but an answer counts only with the deal in its body
_WRK_CHECKED = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status == 200 and not string.find(body, %s, 1, true) then bad = bad + 1 end
end
function done(summary, latency, requests)
  local b = 0
  for _, t in ipairs(threads) do b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format(
    "VKBENCH %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d %%d\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, b))
end
"""


def run_wrk(
    wrk: str,
    port: int,
    headers: dict[str, str],
    body: str,
    concurrency: int,
    duration: float,
    workdir: Path,
    name: str,
) -> base.Phase:
    lua = base._lua_string
    lines = ['wrk.method = "POST"', f"wrk.body = {lua(body)}"]
    lines += [f"wrk.headers[{lua(k)}] = {lua(v)}" for k, v in headers.items()]
    script = workdir / f"{name}.lua"
    script.write_text("\n".join(lines) + "\n" + _WRK_CHECKED % lua(MARKER))
    seconds = max(1, round(duration))
    command = [wrk, "-t", str(max(1, min(2, concurrency))), "-c", str(concurrency),
               "-d", f"{seconds}s", "--timeout", "5s", "-s", str(script),
               f"http://{base.HOST}:{port}/mcp"]  # fmt: skip
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 30, check=False
    ).stdout
    line = next((x for x in out.splitlines() if x.startswith("VKBENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    (requests, dur_us, connect, read, write, status, timeout, p50, p90, p99, pmax, bad) = (
        int(v) for v in line.split()[1:]
    )
    phase = base.Phase(name, "wrk", duration_s=dur_us / 1e6, requests=requests)
    phase.error_detail = {"non_200": status, "no_deal": bad, "connect": connect,
                          "read": read, "write": write, "timeout": timeout}  # fmt: skip
    phase.ok = requests - status - bad
    phase.errors = sum(phase.error_detail.values())
    phase.rps = phase.ok / phase.duration_s if phase.duration_s else 0.0
    phase.p50_ms, phase.p90_ms = p50 / 1000, p90 / 1000
    phase.p99_ms, phase.max_ms = p99 / 1000, pmax / 1000
    phase.in_flight_cut = concurrency  # wrk drops the requests in flight when time is up
    return phase


async def _py_worker(
    port: int, request: bytes, deadline: float, latencies: list[float], counts: dict[str, int]
) -> None:
    """One keep-alive connection: send, read the whole answer, check it, until the deadline."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    clock = time.perf_counter
    marker = MARKER.encode()
    try:
        while clock() < deadline:
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(base.HOST, port)
                except OSError:
                    counts["connect"] += 1
                    await asyncio.sleep(0.01)
                    continue
            assert reader is not None
            start = clock()
            try:
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
                lower = head.lower()
                at = lower.find(b"\r\ncontent-length:")
                if at < 0:
                    raise ValueError("no content-length")
                length = int(lower[at + 17 : lower.find(b"\r\n", at + 2)])
                body = await asyncio.wait_for(reader.readexactly(length), 5.0) if length else b""
            except TimeoutError:
                counts["timeout"] += 1
                writer.close()
                writer = None
                continue
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                counts["read"] += 1
                writer.close()
                writer = None
                continue
            latencies.append(clock() - start)
            counts["requests"] += 1
            if head[9:12] != b"200":
                counts["non_200"] += 1
            elif marker not in body:
                counts["no_deal"] += 1
            if b"\r\nconnection: close" in lower:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


def run_python(
    port: int, headers: dict[str, str], body: str, concurrency: int, duration: float, name: str
) -> base.Phase:
    head = ["POST /mcp HTTP/1.1", f"Host: {base.HOST}:{port}", "Connection: keep-alive"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"Content-Length: {len(body.encode())}")
    request = ("\r\n".join(head) + "\r\n\r\n" + body).encode()
    latencies: list[float] = []
    counts = dict.fromkeys(("requests", "non_200", "no_deal", "connect", "read", "timeout"), 0)

    async def drive() -> float:
        start = time.perf_counter()
        deadline = start + duration
        tasks = []
        for _ in range(concurrency):
            tasks.append(
                asyncio.create_task(_py_worker(port, request, deadline, latencies, counts))
            )
            await asyncio.sleep(0.002)  # one by one: a burst lets one worker accept most
        await asyncio.wait_for(asyncio.gather(*tasks), duration + 30)
        return time.perf_counter() - start

    elapsed = base._run_loop(drive())
    latencies.sort()
    phase = base.Phase(name, "python", duration_s=elapsed, requests=counts["requests"])
    phase.ok = counts["requests"] - counts["non_200"] - counts["no_deal"]
    phase.error_detail = {k: v for k, v in counts.items() if k != "requests"}
    phase.errors = sum(phase.error_detail.values())
    phase.rps = phase.ok / elapsed if elapsed else 0.0
    phase.p50_ms = base._percentile(latencies, 50) * 1000
    phase.p90_ms = base._percentile(latencies, 90) * 1000
    phase.p99_ms = base._percentile(latencies, 99) * 1000
    phase.max_ms = (latencies[-1] if latencies else 0.0) * 1000
    return phase


# ----------------------------------------------------------------------------------------
# phases
def measure(
    bench: base.Bench,
    meter: http_gateway.Meter,
    upstream: Upstream,
    wrk: str | None,
    say: Any,
    name: str,
    port: int,
    headers: dict[str, str],
    body: str,
    concurrency: int,
    seconds: float,
    profile: bool = False,
) -> tuple[base.Phase, dict[str, Any]]:
    """One phase: `seconds` of `tools/call` on `port` at `concurrency`, with the CPU used by
    the gateway, the upstream, the generator and the others, and what the upstream saw."""
    say(f"{name}: POST /mcp tools/call {headers['Mcp-Name']}, concurrency {concurrency}, "
        f"{seconds:g} s")  # fmt: skip
    gateway = port == bench.port
    spies = start_profilers(bench, bench.args.profile, seconds) if profile else []
    spread: list[int] = []
    sampler = None
    if gateway and bench.args.workers > 1:
        sampler = threading.Timer(
            min(1.0, seconds / 2),
            lambda: spread.extend(base._connections_per_worker(bench.port, bench.worker_pids())),
        )
        sampler.start()
    seen_before = upstream.stats()
    before, children_before = meter.snapshot(), os.times()
    if wrk:
        result = run_wrk(wrk, port, headers, body, concurrency, seconds, bench.tmp, name)
    else:
        result = run_python(port, headers, body, concurrency, seconds, name)
    after, children_after = meter.snapshot(), os.times()
    seen = _delta(seen_before, upstream.stats())
    child_ticks = round(
        (
            children_after.children_user
            + children_after.children_system
            - children_before.children_user
            - children_before.children_system
        )
        * base.CLK_TCK
    )
    result.cpu = meter.cores(before, after, child_ticks if wrk else 0)
    if sampler is not None:
        sampler.join()
    result.connections_per_worker = spread
    elapsed = (after["t"] - before["t"]) / 1e9
    upstream_cpu_ms = 0.0
    if result.requests:
        per_call = elapsed * 1000 / result.requests
        result.server_cpu_ms_per_req = round(result.cpu["server"] * per_call, 3)
        result.postgres_cpu_ms_per_req = round(result.cpu["postgres"] * per_call, 3)
        upstream_cpu_ms = round(result.cpu["platform"] * per_call, 3)
    for spy in spies:
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(30)
    return result, {"requests": seen, "cpu_ms_per_call": upstream_cpu_ms}


def compare(
    direct: tuple[base.Phase, dict[str, Any]], gateway: tuple[base.Phase, dict[str, Any]]
) -> dict[str, Any]:
    (direct_phase, direct_seen), (gateway_phase, gateway_seen) = direct, gateway
    return {
        "direct": {**asdict(direct_phase), "upstream": direct_seen},
        "gateway": {**asdict(gateway_phase), "upstream": gateway_seen},
        # Differences of the percentiles (the two phases' requests are not paired).
        "added_p50_ms": round(gateway_phase.p50_ms - direct_phase.p50_ms, 3),
        "added_p99_ms": round(gateway_phase.p99_ms - direct_phase.p99_ms, 3),
        "ratio": round(gateway_phase.rps / direct_phase.rps, 3) if direct_phase.rps else None,
    }


def count_events(bench: base.Bench) -> dict[str, int]:
    sql = (
        "SELECT sum(CASE WHEN e.type = 'mcp.tool_called' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN e.type = 'mcp.tool_called' AND e.outcome = 'success' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN e.type = 'decision.made' THEN 1 ELSE 0 END) FROM audit_events e "
        "JOIN tenants t ON t.id = e.tenant_id WHERE t.name = {p} "
        "AND e.type IN ('mcp.tool_called', 'decision.made')"
    )
    called, succeeded, made = bench.fetch_one(sql, bench.tenant)
    return {
        "mcp_tool_called": int(called or 0),
        "mcp_tool_called_success": int(succeeded or 0),
        "decision_made": int(made or 0),
    }


# ----------------------------------------------------------------------------------------
# the run
def run(args: argparse.Namespace) -> dict[str, Any]:
    wrk = base.find_wrk(args)

    def say(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr, flush=True)

    bench = base.Bench(args)
    upstream: Upstream | None = None
    try:
        bench.prepare_database()
        upstream = Upstream(bench.tmp)
        say(
            f"data dir {bench.tmp}; database {bench.database_url or 'SQLite (WAL)'}; "
            f"upstream on {upstream.base}/mcp (pid {upstream.pid})"
        )
        client_id, client_secret = set_up(bench, upstream)
        bench.start_server()
        token = mcp_token(bench, client_id, client_secret)
        checks = check_paths(bench, upstream, token)
        say(
            f"checked: the upstream refuses a call without its token; {TOOL} directly and "
            f"{GATEWAY_TOOL} through /mcp answer the deal; one refresh; the first gateway "
            f"call asked the upstream {checks['upstream_requests_first_call']}"
        )
        meter = http_gateway.Meter(bench.server.pid if bench.server else 0, upstream.pid)
        quiet = base._wait_quiet(args.wait_quiet, say) if args.wait_quiet else None
        load_avg = os.getloadavg()[0]
        phase = functools.partial(measure, bench, meter, upstream, wrk, say)
        high = args.concurrency
        answered, in_flight_cut = 2, 0  # the checks' two gateway answers
        if args.warmup > 0:
            headers, body = call_request(token, GATEWAY_TOOL)
            warm, _ = phase("warm-up", bench.port, headers, body, high, args.warmup)
            answered += warm.ok
            in_flight_cut += warm.in_flight_cut
        rows: dict[str, Any] = {}
        for concurrency in (1, high):
            headers, body = call_request(upstream.access_token, TOOL)
            direct = phase(
                f"direct-c{concurrency}", upstream.port, headers, body, concurrency, args.duration
            )
            token = mcp_token(bench, client_id, client_secret)  # fresh for each phase
            headers, body = call_request(token, GATEWAY_TOOL)
            through = phase(
                f"gateway-c{concurrency}",
                bench.port,
                headers,
                body,
                concurrency,
                args.duration,
                profile=bool(args.profile) and concurrency == high,
            )
            answered += through[0].ok
            in_flight_cut += through[0].in_flight_cut
            rows[f"c{concurrency}"] = compare(direct, through)
        time.sleep(1.0)  # the last mcp.tool_called events: recorded as each answer goes out
        final = upstream.stats()
        bench.kill_server()
        events = count_events(bench)
        called, succeeded = events["mcp_tool_called"], events["mcp_tool_called_success"]
        complete = (
            answered <= succeeded == called <= answered + in_flight_cut
            and answered <= events["decision_made"] <= answered + in_flight_cut
        )
        return {
            "config": {
                **base.run_config(bench, wrk, load_avg, quiet),
                "concurrencies": [1, high],
                "protocol": PROTOCOL,
                "upstream": "one process of this script: mcp SDK "
                f"{_version('mcp')} low-level Server, stateless JSON, uvicorn "
                f"{_version('uvicorn')} + httptools"
                + (" + uvloop" if http_gateway._has_uvloop() else ""),
                "shared_cores": "the load generator, the gateway's workers and the upstream "
                f"share this machine's {os.cpu_count()} cores",
            },
            "checks": checks,
            "rows": rows,
            "upstream_counts": final,
            "audit": {
                "gateway_answers": answered,
                **events,
                "abandoned_in_flight_max": in_flight_cut,
                "checked": "1 s after the load, then SIGKILL of the server",
                "complete": complete,
            },
        }
    finally:
        if upstream is not None:
            upstream.stop()
        bench.cleanup()


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


# ----------------------------------------------------------------------------------------
# profile: by layer, by step of the call, by function
def start_profilers(
    bench: base.Bench, directory: str, seconds: float
) -> list[subprocess.Popen[bytes]]:
    """py-spy on each worker: every thread that is on a CPU, holding the GIL or not (C code
    that releases it, e.g. OpenSSL loading a CA bundle or sqlite3 steps, counts too)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for pid in bench.worker_pids():
        command = [spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds) - 1)),
                   "--rate", "250", "--nonblocking", "--format", "raw",
                   "--output", str(out / f"worker-{pid}.txt")]  # fmt: skip
        procs.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return procs


def step_of(frames: list[str]) -> str:
    """The step of a `/mcp` call one sample's stack (outermost frame first) was in."""
    for frame in frames:
        function = frame.split(" (", 1)[0].rsplit(".", 1)[-1]
        label = next((n for n, f, where in STEPS if where in frame and function == f), None)
        if label == FORWARD:
            return next(
                (n for n, keys in FORWARD_PARTS if any(k in f for f in frames for k in keys)),
                FORWARD_REST,
            )
        if label:
            return label
    if any("mcp/client/" in frame for frame in frames):
        return TRANSPORT
    if any(k in frame for frame in frames for k in ("web/mcp.py", "mcp/server/", "mcp/shared/")):
        return SERVER
    return f"outside the call: {base.layer_of(frames, LAYERS)}"


def summarize_steps(directory: str) -> list[tuple[str, float]]:
    """Share of the samples per step of a `/mcp` call; samples outside any call (the audit
    writer, the database threads, the server) by their layer."""
    return base.collapsed_shares(directory, step_of)


# ----------------------------------------------------------------------------------------
# report
def report(result: dict[str, Any]) -> str:
    cfg, checks, audit = result["config"], result["checks"], result["audit"]
    high = cfg["concurrencies"][1]
    lines = [
        f"ValetKey MCP gateway: tools/call {TOOL} on the upstream directly vs {GATEWAY_TOOL} "
        f"through /mcp: {cfg['database']}, {cfg['workers']} worker(s), {cfg['duration_s']:g} s "
        f"per phase, generator {cfg['generator']}, {cfg['cpus']} CPUs (load "
        f"{cfg['load_avg_1m_at_start']} at start), protocol {cfg['protocol']}",
        f"NOTE: {cfg['shared_cores']}; the upstream is {cfg['upstream']}, "
        f"{checks['body_bytes']}-byte deal as the tool's text.",
        "",
        f"{'conc':>4} {'path':<8}{'req/s':>8}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}"
        f"{'errors':>7}{'+p50 ms':>9}{'+p99 ms':>9}{'ratio':>7}{'gw CPU/call':>13}"
        f"{'up CPU/call':>13}  cores: {'gw':>5}{'up':>5}{'gen':>5}{'irq':>5}{'pg':>5}"
        f"{'other':>6}",
    ]
    for concurrency in cfg["concurrencies"]:
        row = result["rows"][f"c{concurrency}"]
        for path in ("direct", "gateway"):
            p, cpu = row[path], row[path]["cpu"]
            first = path == "direct"
            extra = (
                f"{'':>9}{'':>9}{'':>7}{'':>13}"
                if first
                else f"{row['added_p50_ms']:>+9.2f}{row['added_p99_ms']:>+9.2f}"
                f"{row['ratio'] or 0:>7.3f}{p['server_cpu_ms_per_req']:>10.3f} ms"
            )
            lines.append(
                f"{concurrency if first else '':>4} {path:<8}{p['rps']:>8.0f}{p['p50_ms']:>8.2f}"
                f"{p['p90_ms']:>8.2f}{p['p99_ms']:>8.2f}{p['errors']:>7}{extra}"
                f"{p['upstream']['cpu_ms_per_call']:>10.3f} ms{'':9}{cpu['server']:>5.2f}"
                f"{cpu['platform']:>5.2f}{cpu['load_generator']:>5.2f}{cpu['kernel_irq']:>5.2f}"
                f"{cpu['postgres']:>5.2f}{cpu['other']:>6.2f}"
            )
    lines += [
        "",
        "+p50/+p99: the gateway's percentile minus the direct one (added latency); ratio: "
        "gateway req/s / direct req/s; gw CPU/call: the gateway's CPU (all its processes) per "
        "call; up CPU/call: the upstream's; cores: gateway, upstream, load generator, kernel "
        "interrupts (loopback TCP), PostgreSQL, anyone else",
        f"checks: the first gateway call asked the upstream "
        f"{checks['upstream_requests_first_call']} ({checks['gateway_first_ms']} ms), the "
        f"second {checks['upstream_requests_second_call']} ({checks['gateway_second_ms']} ms)",
    ]
    for concurrency in cfg["concurrencies"]:
        seen = result["rows"][f"c{concurrency}"]["gateway"]["upstream"]["requests"]
        calls = seen.get("gateway tools/call") or 1
        per = ", ".join(
            f"{k.split(' ', 1)[1]} {v / calls:.2f}"
            for k, v in seen.items()
            if k.startswith("gateway ") and k != "gateway tools/call"
        )
        lines.append(
            f"upstream, per tools/call the gateway forwarded at c{concurrency}: {per or '-'}; "
            f"new TCP connections {seen.get('gateway_connections', 0) / calls:.2f}"
        )
    if cfg["database"] == "postgresql":
        lines.append(
            "PostgreSQL CPU per gateway call: "
            + ", ".join(
                f"c{c} {result['rows'][f'c{c}']['gateway']['postgres_cpu_ms_per_req']:.3f} ms"
                for c in cfg["concurrencies"]
            )
        )
    if cfg["workers"] > 1:
        spread = result["rows"][f"c{high}"]["gateway"]["connections_per_worker"]
        lines.append(f"gateway connections per worker at c{high}: {spread}")
        if spread and min(spread) * 2 * cfg["workers"] < high:
            lines.append(
                "WARNING: the kernel gave the workers uneven shares of the connections (one "
                "listening socket): the gateway figures understate the workers"
            )
    every = [r[path] for r in result["rows"].values() for path in ("direct", "gateway")]
    disturbed = max(p["cpu"]["other"] for p in every)
    if disturbed > 0.2:
        lines.append(
            f"WARNING: {disturbed} cores went to other processes (shared machine), the figures "
            "are disturbed: run again when it is quiet (--wait-quiet 120)"
        )
    if cfg["profiled"]:
        lines.append(
            f"NOTE: py-spy ran during the gateway c{high} phase: its figures are lower than an "
            "unprofiled run's"
        )
    for key, row in result["rows"].items():
        for path in ("direct", "gateway"):
            if row[path]["errors"]:
                lines.append(f"{path} {key} errors: {row[path]['error_detail']}")
    lines.append(
        f"audit ({audit['checked']}): {audit['mcp_tool_called']} mcp.tool_called "
        f"({audit['mcp_tool_called_success']} success) and {audit['decision_made']} "
        f"decision.made events for {audit['gateway_answers']} gateway answers"
        + (
            f" (+ up to {audit['abandoned_in_flight_max']} requests abandoned in flight by wrk)"
            if audit["abandoned_in_flight_max"]
            else ""
        )
        + (" -> one of each per call" if audit["complete"] else " -> MISMATCH")
    )
    if "profile" in result:
        profile = result["profile"]
        lines += ["", f"py-spy profile of the gateway's workers at concurrency {high} "
                  f"({profile['dir']}; every thread on a CPU, with or without the GIL; "
                  f"{profile['samples']} samples), by layer (innermost frame first):"]  # fmt: skip
        lines += [f"{pct:6.1f}%  {layer}" for layer, pct in profile["layers_pct"].items()]
    if "profile" in result and result["profile"].get("steps_pct"):
        lines.append("by step of the call (a step includes what it awaits):")
        lines += [f"{pct:6.1f}%  {step}" for step, pct in result["profile"]["steps_pct"].items()]
        lines.append("top functions (where the samples were: innermost frame):")
        lines += [
            f"{pct:6.1f}%  {name}" for name, pct in result["profile"]["top_functions_pct"].items()
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments == ["--serve-upstream"]:
        return upstream_main()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    base.add_arguments(parser)
    parser.set_defaults(duration=10.0)
    args = parser.parse_args(arguments)
    base.check_arguments(parser, args)
    if args.concurrency < 2:
        parser.error("--concurrency at least 2 (1 is always measured)")
    from mcp_types.version import LATEST_MODERN_VERSION

    if LATEST_MODERN_VERSION != PROTOCOL:
        print(f"note: the SDK's newest protocol is {LATEST_MODERN_VERSION}", file=sys.stderr)
    if args.profile and not (
        shutil.which("py-spy") or Path(sys.executable).with_name("py-spy").exists()
    ):
        print("py-spy is not installed: no profile (pip install py-spy)", file=sys.stderr)
        args.profile = None
    result = run(args)
    if args.profile:
        result["profile"] = {
            "dir": args.profile,
            "samples": sum(
                int(line.rpartition(" ")[2])
                for path in Path(args.profile).glob("worker-*.txt")
                for line in path.read_text().splitlines()
                if line.rpartition(" ")[2].isdigit()
            ),
            "layers_pct": {k: round(v, 1) for k, v in base.summarize_profile(args.profile, LAYERS)},
            "steps_pct": {k: round(v, 1) for k, v in summarize_steps(args.profile)},
            "top_functions_pct": {k: round(v, 1) for k, v in base.top_functions(args.profile, 20)},
        }
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else report(result))
    failed = any(
        r[path]["errors"] for r in result["rows"].values() for path in ("direct", "gateway")
    )
    return 1 if failed or not result["audit"]["complete"] else 0


if __name__ == "__main__":
    sys.exit(main())
