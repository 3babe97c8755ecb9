#!/usr/bin/env python3
"""Gateway overhead: one platform endpoint called directly and through `/v1/gateway/crm/…`.

Starts its own ValetKey exactly as bench/token_issuance.py does (`valetkey serve`, 127.0.0.1
only, a temporary data dir, SQLite by default or `--database-url` for PostgreSQL) and, in a
separate process of this script, a stand-in platform: a minimal asyncio HTTP/1.1 server
(uvloop when available, keep-alive, no framework) on 127.0.0.1 that answers
`GET /api/deals/42` with a ~200-byte JSON deal after checking `Authorization: Bearer <its
access token>`, and `POST /token` (`grant_type=refresh_token`, client authentication
checked) with that access token. With the CLI it sets up what a gateway call needs: a
tenant and a sponsor, the provider `crm` (`providers add … --api-base
http://127.0.0.1:PORT/api`), an agent with `crm:read`, the agent's own connection
(`connections import --agent … --refresh-token-stdin`), and a `client_credentials` token
for `resource={issuer}/v1/gateway/crm`, `scope=crm:read`.

Before the load it checks one request of each path (the platform refuses a call without
its token; directly and through the gateway, 200 with the exact deal; the gateway's first
call refreshed the connection once). Then, on the same servers in the same run, for two
platforms — answering at once (the gateway's own ceiling and added latency) and after
20 ms (what users see) — and at concurrency 1 and 16: the platform directly, then the same
endpoint through the gateway, each for a fixed time. It prints requests/s, p50/p99
latency and errors for each, and for the gateway the added latency (gateway p50/p99 minus
direct p50/p99) and the throughput ratio gateway/direct, next to the targets (zero-latency
platform: at most 2 ms added at p50 and at least 60% of direct throughput, at both
concurrencies). The load generator, the gateway's workers and the platform share the
machine's cores: the report says who used how much. Afterwards it counts the
`decision.made` and `gateway.called` events: one each per gateway answer.

The load generators are token_issuance.py's (`wrk` when installed, else asyncio over raw
HTTP/1.1 keep-alive connections). Every phase is bounded in time and the script stops by
itself (the platform process exits when this script does).

    .venv/bin/python bench/gateway.py                      # SQLite, 2 workers, 10 s per phase
    .venv/bin/python bench/gateway.py --workers 1 --json
    .venv/bin/python bench/gateway.py --database-url "$VALETKEY_TEST_PG_URL"

`--database-url`, `--reuse-database`, `--generator`, `--wait-quiet`, `--output FILE` behave
as in token_issuance.py; `--concurrency N` is the high concurrency (1 is always measured
too); `--latency MS` the slow platform's delay; `--profile DIR` records py-spy (`--gil`)
on each worker during the gateway phase against the zero-latency platform at the high
concurrency, and summarises it by layer and by gateway step.
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

sys.path.insert(0, str(Path(__file__).parent))
import token_issuance as base

PROVIDER = "crm"
SCOPE = f"{PROVIDER}:read"
API_PATH = "/api/deals/42"  # on the platform
GATEWAY_PATH = f"/v1/gateway/{PROVIDER}/deals/42"  # the same call, through ValetKey
CLIENT_ID = "valetkey-bench"
TARGET_ADDED_P50_MS = 2.0  # zero-latency platform, concurrency 1 and high
TARGET_RATIO = 0.60  # gateway/direct throughput, zero-latency platform
NEAR_ONE = 0.95  # "near 1.0": the slow platform at the high concurrency
DEAL = json.dumps(
    {
        "id": "42",
        "name": "Initech renewal",
        "stage": "negotiation",
        "amount": 125000,
        "currency": "EUR",
        "owner": "sam@acme.example",
        "close_date": "2026-09-30",
        "probability": 0.6,
        "updated_at": "2026-05-04T10:12:00Z",
    },
    separators=(",", ":"),
).encode()

# Layers of the gateway path, matched on each sample's innermost frames first.
LAYERS = [
    ("token verification (joserfc)", ("joserfc/",)),
    ("vault (valetkey.vault: TokenVault, envelope decryption)", ("valetkey/vault/",)),
    ("forwarding client (aiohttp, yarl, multidict)", ("aiohttp/", "yarl/", "multidict/")),
    ("Cedar (cedarpy)", ("cedarpy/",)),
    ("SQLite driver (sqlite3)", ("sqlite3/", "aiosqlite/")),
    ("PostgreSQL driver (asyncpg)", ("asyncpg/",)),
    ("SQLAlchemy", ("sqlalchemy/", "greenlet")),
    ("ValetKey storage (hot-path reads, counters, audit inserts)", ("valetkey/storage/",)),
    ("audit chain and writer (valetkey.audit)", ("valetkey/audit/",)),
    ("decision logic (valetkey.policy)", ("valetkey/policy/",)),
    ("HTTP server (uvicorn, httptools)", ("uvicorn/", "httptools")),
    ("FastAPI + Starlette", ("fastapi/", "starlette/")),
    ("gateway glue (valetkey.gateway, web.gateway)", ("valetkey/gateway/", "valetkey/web/gateway")),
    ("ValetKey web and OAuth (token checks, caller)", ("valetkey/",)),
    ("event loop, asyncio, stdlib", ("asyncio/", "uvloop", "concurrent/", "threading")),
]

# The steps of one gateway call (web/gateway.py, in order), matched on each sample's
# outermost frame that names one: a step's share includes everything it awaits, but not
# the audit commits (the audit writer's own task: "outside the call's coroutine").
STEPS = [
    ("token check (v1.token_from: claims cache, expiry, revocation)", "token_from", "web/v1.py"),
    ("caller (Authorizer.caller)", "caller", "policy/authorizer.py"),
    ("provider lookup (ProviderDirectory.find, cached)", "find", "gateway/calls.py"),
    ("intent (provider path mapping, narrowing)", "intent", "vault/providers.py"),
    (
        "decision (limits, counters, Cedar, queueing decision.made)",
        "decide",
        "policy/authorizer.py",
    ),
    ("connection lookup (find_for)", "_connection", "web/gateway.py"),
    ("vault (TokenVault.access: row read + decrypt)", "access", "vault/refresh.py"),
    ("outbound headers", "outbound_headers", "gateway/proxy.py"),
    ("forward (Forwarder.send: aiohttp request, response head)", "send", "gateway/proxy.py"),
    ("response to the agent (_respond: headers, body read, send)", "_respond", "web/gateway.py"),
    ("gateway.called audit (queueing it)", "record", "audit/writer.py"),
]


# ----------------------------------------------------------------------------------------
# the platform: a separate process running a minimal asyncio HTTP/1.1 server
class _PlatformState:
    def __init__(self, config: dict[str, str]) -> None:
        self.bearer = config["access_token"].encode()
        self.refresh_token = config["refresh_token"]
        self.client = (config["client_id"], config["client_secret"])
        self.delay = 0.0
        self.counts = dict.fromkeys(
            ("api_calls", "api_via_gateway", "api_refused", "token_requests", "refresh_grants"), 0
        )
        self.deal = _response(200, DEAL)
        self.refused = _response(
            401, b'{"error":"invalid_token"}', b'WWW-Authenticate: Bearer error="invalid_token"\r\n'
        )

    def token(self, head: bytes, lower: bytes, body: bytes) -> bytes:
        self.counts["token_requests"] += 1
        form = dict(urllib.parse.parse_qsl(body.decode("latin-1")))
        basic = _header(head, lower, b"authorization")
        client = (form.get("client_id"), form.get("client_secret"))
        if basic is not None and basic[:6].lower() == b"basic ":
            with contextlib.suppress(binascii.Error, ValueError):
                raw = base64.b64decode(basic[6:].strip()).decode()
                user, _, password = raw.partition(":")
                client = (urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password))
        if client != self.client:
            return _response(401, b'{"error":"invalid_client"}')
        if form.get("grant_type") != "refresh_token":
            return _response(400, b'{"error":"unsupported_grant_type"}')
        if form.get("refresh_token") != self.refresh_token:
            return _response(400, b'{"error":"invalid_grant"}')
        self.counts["refresh_grants"] += 1
        issued = {
            "access_token": self.bearer.decode(),
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": self.refresh_token,  # static (not rotated)
        }
        return _response(200, json.dumps(issued).encode(), b"Cache-Control: no-store\r\n")

    def api(self, head: bytes, lower: bytes) -> bytes:
        self.counts["api_calls"] += 1
        if b"\r\nx-agent-id:" in lower:
            self.counts["api_via_gateway"] += 1
        auth = _header(head, lower, b"authorization") or b""
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() != b"bearer" or token.strip() != self.bearer:
            self.counts["api_refused"] += 1
            return self.refused
        return self.deal


def _response(status: int, body: bytes, extra: bytes = b"") -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 404: b"Not Found"}
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    return head % (status, reason.get(status, b"Status"), len(body)) + extra + b"\r\n" + body


def _header(head: bytes, lower: bytes, name: bytes) -> bytes | None:
    """A header's value (original case) from a request head and its lower-case copy."""
    at = lower.find(b"\r\n" + name + b":")
    if at < 0:
        return None
    start = at + len(name) + 3
    end = lower.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip()


class _PlatformProtocol(asyncio.Protocol):
    """One keep-alive connection: requests parsed from the buffer, answered in order."""

    def __init__(self, state: _PlatformState) -> None:
        self.state = state
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.ready_at = 0.0  # when the last delayed answer on this connection goes out

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536 and self.transport is not None:
                    self.transport.close()
                return
            head = bytes(self.buffer[:end])
            lower = head.lower()
            length = _header(head, lower, b"content-length")
            size = int(length) if length and length.isdigit() else 0
            if len(self.buffer) < end + 4 + size:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + size])
            del self.buffer[: end + 4 + size]
            self.handle(head, lower, body)

    def handle(self, head: bytes, lower: bytes, body: bytes) -> None:
        line = head.split(b"\r\n", 1)[0].split(b" ")
        method, target = (line[0], line[1]) if len(line) == 3 else (b"", b"")
        path = target.split(b"?", 1)[0]
        state, delay = self.state, 0.0
        if method == b"GET" and path == API_PATH.encode():
            answer, delay = state.api(head, lower), state.delay
        elif method == b"POST" and path == b"/token":
            answer = state.token(head, lower, body)
        elif method == b"PUT" and path.startswith(b"/_bench/latency/"):
            state.delay = int(path.rsplit(b"/", 1)[1]) / 1000
            answer = _response(200, b'{"latency_ms":%d}' % round(state.delay * 1000))
        elif method == b"GET" and path == b"/_bench/stats":
            answer = _response(200, json.dumps(state.counts).encode())
        else:
            answer = _response(404, b'{"error":"not_found"}')
        now = self.loop.time()
        if delay > 0 or self.ready_at > now:  # answers leave in the order of the requests
            self.ready_at = max(self.ready_at, now + delay)
            self.loop.call_at(self.ready_at, self._write, answer)
        else:
            self._write(answer)
        if b"\r\nconnection: close" in lower and self.transport is not None:
            self.loop.call_at(max(self.ready_at, now), self.transport.close)

    def _write(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)


async def _serve_platform(config: dict[str, str]) -> None:
    state = _PlatformState(config)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _PlatformProtocol(state), base.HOST, 0, backlog=1024, reuse_address=True
    )
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    gone = asyncio.Event()
    # The bench holds our stdin open: its end (the bench exited, however) ends us too.
    threading.Thread(
        target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(gone.set)), daemon=True
    ).start()
    await gone.wait()
    server.close()


def platform_main() -> int:
    config = json.loads(sys.stdin.readline())
    base._run_loop(_serve_platform(config))
    return 0


class Platform(base.StandIn):
    """The platform process, seen from the bench."""

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
        super().__init__("platform", __file__, "--serve-platform", workdir, config, 30)

    def request(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(self.base + path, data=None, method=method)
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
        return answer

    def stats(self) -> dict[str, int]:
        return self.request("GET", "/_bench/stats")

    def set_latency(self, ms: int) -> None:
        self.request("PUT", f"/_bench/latency/{ms}")


# ----------------------------------------------------------------------------------------
# set-up and checks
def cli(bench: base.Bench, *argv: str, stdin: str = "") -> Any:
    """`valetkey ARGV --json` with `stdin` (secrets are never put on a command line)."""
    done = subprocess.run(
        [*bench.cli, *argv, "--json"],
        env=bench.env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"valetkey {' '.join(argv)} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def set_up(bench: base.Bench, platform: Platform) -> tuple[str, str]:
    """Tenant, sponsor, provider, agent with `crm:read` and its own connection; the agent's
    (client_id, client_secret)."""
    email = f"ops@{bench.tenant}.example"
    tenant = ["--tenant", bench.tenant]
    cli(bench, "tenants", "create", bench.tenant)
    cli(bench, "users", "create", email, *tenant, "--role", "admin")
    cli(bench, "providers", "add", PROVIDER, *tenant,
        "--authorize-url", platform.base + "/authorize", "--token-url", platform.base + "/token",
        "--api-base", platform.base + "/api", "--client-id", CLIENT_ID, "--client-secret-stdin",
        stdin=platform.client_secret + "\n")  # fmt: skip
    agent = cli(bench, "agents", "create", "crm-bench", *tenant, "--sponsor", email,
                "--scope", SCOPE)  # fmt: skip
    cli(bench, "connections", "import", *tenant, "--provider", PROVIDER, "--agent", agent["id"],
        "--refresh-token-stdin", stdin=platform.refresh_token + "\n")  # fmt: skip
    return agent["client_id"], agent["client_secret"]


def gateway_token(bench: base.Bench, client_id: str, client_secret: str) -> str:
    form = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "resource": f"{bench.env['VALETKEY_ISSUER']}/v1/gateway/{PROVIDER}",
            "scope": SCOPE,
        }
    )
    answer = base._token_once(bench.port, base.client_headers(client_id, client_secret), form)
    return str(answer["access_token"])


def fetch(port: int, path: str, token: str | None) -> tuple[int, bytes, float]:
    """(status, body, seconds) of one GET."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://{base.HOST}:{port}{path}", headers=headers)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    return status, body, time.perf_counter() - started


def check_paths(bench: base.Bench, platform: Platform, token: str) -> dict[str, Any]:
    """One request of each path before the load; anything unexpected stops the bench."""

    def expect(what: str, got: tuple[int, bytes, float], status: int, body: bytes) -> float:
        if got[0] != status or (body and got[1] != body):
            raise SystemExit(
                f"check FAILED: {what} answered {got[0]} {got[1][:300]!r}, "
                f"expected {status}" + (f" {body!r}" if body else "")
            )
        return round(got[2] * 1000, 2)

    stats = platform.stats()
    expect("the platform without its token", fetch(platform.port, API_PATH, None), 401, b"")
    direct = expect(
        "the platform", fetch(platform.port, API_PATH, platform.access_token), 200, DEAL
    )
    first = expect(
        f"the gateway ({GATEWAY_PATH})", fetch(bench.port, GATEWAY_PATH, token), 200, DEAL
    )
    second = expect("the gateway, again", fetch(bench.port, GATEWAY_PATH, token), 200, DEAL)
    after = platform.stats()
    refreshes = after["refresh_grants"] - stats["refresh_grants"]
    via = after["api_via_gateway"] - stats["api_via_gateway"]
    if refreshes != 1 or via != 2:
        raise SystemExit(
            f"check FAILED: the gateway's two calls made {refreshes} refresh(es) and {via} "
            "platform call(s); expected 1 and 2"
        )
    return {
        "direct_ms": direct,
        "gateway_first_ms": first,  # includes the connection's first refresh
        "gateway_second_ms": second,
        "refresh_grants": refreshes,
        "body_bytes": len(DEAL),
    }


# ----------------------------------------------------------------------------------------
# CPU: base.CpuMeter plus the platform process
class Meter(base.CpuMeter):
    """base.CpuMeter, plus the platform process and the kernel's interrupt work (loopback
    TCP is processed in softirq context, charged to no process)."""

    def __init__(self, server_pid: int, platform_pid: int) -> None:
        super().__init__(server_pid)
        self.platform_pid = platform_pid

    def snapshot(self) -> dict[str, int]:
        snap = super().snapshot()
        snap["platform"] = base._proc_ticks(self.platform_pid)
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
        snap["irq"] = values[5] + values[6]  # irq + softirq
        return snap

    def cores(
        self, before: dict[str, int], after: dict[str, int], wrk_ticks: int
    ) -> dict[str, Any]:
        cores: dict[str, Any] = base.CpuMeter.delta(before, after, wrk_ticks)
        per_second = base.CLK_TCK * (after["t"] - before["t"]) / 1e9
        platform = (after["platform"] - before["platform"]) / per_second
        kernel = (after["irq"] - before["irq"]) / per_second
        cores["platform"] = round(platform, 2)
        cores["kernel_irq"] = round(kernel, 2)
        cores["other"] = round(max(cores["other"] - platform - kernel, 0.0), 2)
        return cores


def measure(
    bench: base.Bench,
    meter: Meter,
    platform: Platform,
    wrk: str | None,
    say: Any,
    name: str,
    port: int,
    path: str,
    token: str,
    concurrency: int,
    seconds: float,
    profile: bool = False,
) -> tuple[base.Phase, dict[str, int]]:
    """One phase: `seconds` of GET `path` on `port` at `concurrency`, with the CPU used (as
    token_issuance.measure, for either server)."""
    say(f"{name}: GET {path}, concurrency {concurrency}, {seconds:g} s")
    gateway = port == bench.port
    spies = base._start_profilers(bench, bench.args, seconds) if profile else []
    spread: list[int] = []
    sampler = None
    if gateway and bench.args.workers > 1:
        sampler = threading.Timer(
            min(1.0, seconds / 2),
            lambda: spread.extend(base._connections_per_worker(bench.port, bench.worker_pids())),
        )
        sampler.start()
    headers = {"Authorization": f"Bearer {token}"}
    calls_before = platform.stats()
    before, children_before = meter.snapshot(), os.times()
    if wrk:
        result = base.run_wrk(
            wrk, port, path, "GET", headers, "", concurrency, seconds, bench.tmp, name
        )
    else:
        result = base.run_python(port, path, "GET", headers, "", concurrency, seconds, name)
    after, children_after = meter.snapshot(), os.times()
    calls_after = platform.stats()
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
    if result.requests:
        elapsed = (after["t"] - before["t"]) / 1e9
        result.server_cpu_ms_per_req = round(
            result.cpu["server"] * elapsed * 1000 / result.requests, 3
        )
        result.postgres_cpu_ms_per_req = round(
            result.cpu["postgres"] * elapsed * 1000 / result.requests, 3
        )
    for spy in spies:
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(30)
    # What reached the platform (wrk's abandoned requests may add up to `concurrency`).
    calls = {k: calls_after[k] - calls_before[k] for k in ("api_calls", "api_refused")}
    return result, calls


def compare(
    direct: tuple[base.Phase, dict[str, int]], gateway: tuple[base.Phase, dict[str, int]]
) -> dict[str, Any]:
    (direct, direct_calls), (gateway, gateway_calls) = direct, gateway
    return {
        "direct": {**asdict(direct), "platform": direct_calls},
        "gateway": {**asdict(gateway), "platform": gateway_calls},
        # Differences of the percentiles (the two phases' requests are not paired).
        "added_p50_ms": round(gateway.p50_ms - direct.p50_ms, 3),
        "added_p99_ms": round(gateway.p99_ms - direct.p99_ms, 3),
        "ratio": round(gateway.rps / direct.rps, 3) if direct.rps else None,
    }


def count_events(bench: base.Bench) -> dict[str, int]:
    sql = (
        "SELECT sum(CASE WHEN e.type = 'decision.made' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN e.type = 'gateway.called' THEN 1 ELSE 0 END) FROM audit_events e "
        "JOIN tenants t ON t.id = e.tenant_id WHERE t.name = {p} "
        "AND e.type IN ('decision.made', 'gateway.called')"
    )
    made, called = bench.fetch_one(sql, bench.tenant)
    return {"decision_made": int(made or 0), "gateway_called": int(called or 0)}


# ----------------------------------------------------------------------------------------
# the run
def run(args: argparse.Namespace) -> dict[str, Any]:
    wrk = base.find_wrk(args)
    say = (lambda *_: None) if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    bench = base.Bench(args)
    platform: Platform | None = None
    try:
        bench.prepare_database()
        platform = Platform(bench.tmp)
        say(
            f"data dir {bench.tmp}; database {bench.database_url or 'SQLite (WAL)'}; "
            f"platform on {platform.base} (pid {platform.pid})"
        )
        client_id, client_secret = set_up(bench, platform)
        bench.start_server()
        token = gateway_token(bench, client_id, client_secret)
        checks = check_paths(bench, platform, token)
        say(
            f"checked: the platform refuses a call without its token; {API_PATH} directly and "
            f"{GATEWAY_PATH} answer 200 with the deal; one refresh"
        )
        meter = Meter(bench.server.pid if bench.server else 0, platform.pid)
        quiet = base._wait_quiet(args.wait_quiet, say) if args.wait_quiet else None
        load_avg = os.getloadavg()[0]
        phase = functools.partial(measure, bench, meter, platform, wrk, say)
        high = args.concurrency
        answered, in_flight_cut = 2, 0  # the checks' two gateway answers
        if args.warmup > 0:
            warm, _ = phase("warm-up", bench.port, GATEWAY_PATH, token, high, args.warmup)
            answered += warm.ok
            in_flight_cut += warm.in_flight_cut
        variants: dict[str, Any] = {}
        for latency in (0, args.latency):
            platform.set_latency(latency)
            slow = fetch(platform.port, API_PATH, platform.access_token)
            if slow[0] != 200 or slow[2] * 1000 < latency * 0.9:  # the loop's timers: 1 ms
                raise SystemExit(
                    f"check FAILED: the {latency} ms platform answered {slow[0]} after "
                    f"{slow[2] * 1000:.2f} ms"
                )
            rows: dict[str, Any] = {"latency_ms": latency}
            for concurrency in (1, high):
                label = f"{latency}ms-c{concurrency}"
                direct = phase(
                    f"direct-{label}",
                    platform.port,
                    API_PATH,
                    platform.access_token,
                    concurrency,
                    args.duration,
                )
                token = gateway_token(bench, client_id, client_secret)  # fresh for each phase
                profile = bool(args.profile) and latency == 0 and concurrency == high
                through = phase(
                    f"gateway-{label}",
                    bench.port,
                    GATEWAY_PATH,
                    token,
                    concurrency,
                    args.duration,
                    profile=profile,
                )
                answered += through[0].ok
                in_flight_cut += through[0].in_flight_cut
                rows[f"c{concurrency}"] = compare(direct, through)
            variants[f"{latency}ms"] = rows
        time.sleep(1.0)  # the last gateway.called events: recorded after each answer
        final = platform.stats()
        bench.kill_server()
        events = count_events(bench)
        zero = variants["0ms"]
        targets: dict[str, Any] = {
            "added_p50_ms_max": TARGET_ADDED_P50_MS,
            "ratio_min": TARGET_RATIO,
            "platform_latency_ms": 0,
        }
        for concurrency in (1, high):
            row = zero[f"c{concurrency}"]
            targets[f"c{concurrency}"] = {
                "added_p50_ms": row["added_p50_ms"],
                "ratio": row["ratio"],
                "added_met": row["added_p50_ms"] <= TARGET_ADDED_P50_MS,
                "ratio_met": (row["ratio"] or 0) >= TARGET_RATIO,
            }
        targets["met"] = all(
            targets[f"c{c}"]["added_met"] and targets[f"c{c}"]["ratio_met"] for c in (1, high)
        )
        slow_ratio = variants[f"{args.latency}ms"][f"c{high}"]["ratio"]
        targets["slow_platform"] = {
            "latency_ms": args.latency,
            "concurrency": high,
            "ratio": slow_ratio,
            "near_one": (slow_ratio or 0) >= NEAR_ONE,
            "near_means": f">= {NEAR_ONE}",
        }
        complete = (
            answered <= events["gateway_called"] <= answered + in_flight_cut
            and answered <= events["decision_made"] <= answered + in_flight_cut
        )
        return {
            "config": {
                **base.run_config(bench, wrk, load_avg, quiet),
                "concurrencies": [1, high],
                "platform_latencies_ms": [0, args.latency],
                "platform": "one process of this script: asyncio HTTP/1.1, "
                + ("uvloop" if _has_uvloop() else "asyncio loop"),
                "shared_cores": "the load generator, the gateway's workers and the platform "
                f"share this machine's {os.cpu_count()} cores",
            },
            "checks": checks,
            "variants": variants,
            "targets": targets,
            "platform_counts": final,
            "audit": {
                "gateway_answers": answered,
                **events,
                "abandoned_in_flight_max": in_flight_cut,
                "checked": "1 s after the load, then SIGKILL of the server",
                "complete": complete,
            },
        }
    finally:
        if platform is not None:
            platform.stop()
        bench.cleanup()


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------------------
# profile: by layer (base.summarize_profile) and by gateway step
def step_of(frames: list[str]) -> str:
    """A gateway call's step (the outermost step frame of the stack); else its glue, or,
    outside the request's coroutine, the layer."""
    inside = False
    for frame in frames:
        if "web/gateway.py" in frame:
            inside = True
        function = frame.split(" (", 1)[0].rsplit(".", 1)[-1]
        label = next((name for name, fn, where in STEPS if where in frame and fn == function),
                     None)  # fmt: skip
        if label:
            return label
    if inside:
        return "gateway glue (header parsing, path, scope check, _forward)"
    return f"outside the call's coroutine: {base.layer_of(frames, LAYERS)}"


def summarize_steps(directory: str) -> list[tuple[str, float]]:
    """Share of the samples per gateway step; samples outside the request's coroutine by
    their layer."""
    return base.collapsed_shares(directory, step_of)


# ----------------------------------------------------------------------------------------
# report
def report(result: dict[str, Any]) -> str:
    cfg, targets, audit = result["config"], result["targets"], result["audit"]
    high = cfg["concurrencies"][1]
    lines = [
        f"ValetKey gateway: GET {API_PATH} directly vs GET {GATEWAY_PATH}: {cfg['database']}, "
        f"{cfg['workers']} worker(s), {cfg['duration_s']:g} s per phase, generator "
        f"{cfg['generator']}, {cfg['cpus']} CPUs (load {cfg['load_avg_1m_at_start']} at start)",
        f"NOTE: {cfg['shared_cores']}; the platform is {cfg['platform']}, "
        f"{result['checks']['body_bytes']}-byte JSON answers.",
        "",
        f"{'platform':<9}{'conc':>5} {'path':<8}{'req/s':>8}{'p50 ms':>8}{'p90 ms':>8}"
        f"{'p99 ms':>8}{'errors':>7}{'+p50 ms':>9}{'+p99 ms':>9}{'ratio':>7}"
        f"{'gw CPU/req':>12}  cores: {'gw':>5}{'plat':>5}{'gen':>5}{'irq':>5}{'pg':>5}"
        f"{'other':>6}",
    ]
    for key, variant in result["variants"].items():
        for concurrency in cfg["concurrencies"]:
            row = variant[f"c{concurrency}"]
            for path in ("direct", "gateway"):
                p, cpu = row[path], row[path]["cpu"]
                first = path == "direct"
                extra = (
                    f"{'':>9}{'':>9}{'':>7}{'':>12}"
                    if first
                    else f"{row['added_p50_ms']:>+9.2f}{row['added_p99_ms']:>+9.2f}"
                    f"{row['ratio'] or 0:>7.3f}{p['server_cpu_ms_per_req']:>9.3f} ms"
                )
                lines.append(
                    f"{key if first else '':<9}{concurrency if first else '':>5} {path:<8}"
                    f"{p['rps']:>8.0f}{p['p50_ms']:>8.2f}{p['p90_ms']:>8.2f}{p['p99_ms']:>8.2f}"
                    f"{_errors_of(p):>7}{extra}{'':9}{cpu['server']:>5.2f}{cpu['platform']:>5.2f}"
                    f"{cpu['load_generator']:>5.2f}{cpu['kernel_irq']:>5.2f}{cpu['postgres']:>5.2f}"
                    f"{cpu['other']:>6.2f}"
                )
    lines += [
        "",
        "+p50/+p99: the gateway's percentile minus the direct one (added latency); ratio: "
        "gateway req/s / direct req/s; gw CPU/req: the gateway's CPU (all its processes) per "
        "call; cores: gateway, platform, load generator, kernel interrupts (loopback TCP), "
        "PostgreSQL, anyone else",
    ]
    verdicts = []
    for concurrency in cfg["concurrencies"]:
        t = targets[f"c{concurrency}"]
        verdicts.append(
            f"c{concurrency}: added p50 {t['added_p50_ms']:.2f} ms "
            f"{'MET' if t['added_met'] else 'NOT met'}, ratio {t['ratio'] or 0:.3f} "
            f"{'MET' if t['ratio_met'] else 'NOT met'}"
        )
    lines.append(
        f"targets (zero-latency platform; <= {targets['added_p50_ms_max']:g} ms added at p50, "
        f">= {targets['ratio_min']:.0%} of direct throughput): " + "; ".join(verdicts)
    )
    slow = targets["slow_platform"]
    lines.append(
        f"{slow['latency_ms']} ms platform at concurrency {slow['concurrency']}: ratio "
        f"{slow['ratio'] or 0:.3f} ({'near' if slow['near_one'] else 'NOT near'} 1.0, "
        f"i.e. {slow['near_means']})"
    )
    gateway_rows = [
        (k, c, v[f"c{c}"]["gateway"]) for k, v in result["variants"].items() for c in (1, high)
    ]
    if cfg["database"] == "postgresql":
        lines.append(
            "PostgreSQL CPU per gateway call: "
            + ", ".join(
                f"{k} c{c} {p['postgres_cpu_ms_per_req']:.3f} ms" for k, c, p in gateway_rows
            )
        )
    if cfg["workers"] > 1:
        spread = ", ".join(f"{k} c{c} {p['connections_per_worker']}" for k, c, p in gateway_rows)
        lines.append(f"gateway connections per worker: {spread}")
        uneven = [
            f"{k} c{c}"
            for k, c, p in gateway_rows
            if c == high
            and p["connections_per_worker"]
            and min(p["connections_per_worker"]) * 2 * cfg["workers"] < high
        ]
        if uneven:
            lines.append(
                f"WARNING: the kernel gave the workers uneven shares of the connections in "
                f"{', '.join(uneven)} (one listening socket): those gateway figures understate "
                "the workers"
            )
    every = [
        row[path]
        for variant in result["variants"].values()
        for row in variant.values()
        if isinstance(row, dict)
        for path in ("direct", "gateway")
    ]
    disturbed = max(p["cpu"]["other"] for p in every)
    if disturbed > 0.2:
        lines.append(
            f"WARNING: {disturbed} cores went to other processes (shared machine), the figures "
            "are disturbed: run again when it is quiet (--wait-quiet 120)"
        )
    if cfg["profiled"]:
        lines.append(
            f"NOTE: py-spy ran during the gateway 0ms c{high} phase: its figures are lower than "
            "an unprofiled run's"
        )
    for key, variant in result["variants"].items():
        for concurrency in cfg["concurrencies"]:
            for path in ("direct", "gateway"):
                p = variant[f"c{concurrency}"][path]
                if _errors_of(p):
                    lines.append(
                        f"{path} {key} c{concurrency} errors: {p['error_detail']}, "
                        f"platform refused {p['platform']['api_refused']}"
                    )
    counts = result["platform_counts"]
    lines.append(
        f"platform: {counts['api_calls']} API calls ({counts['api_via_gateway']} through the "
        f"gateway; {counts['api_refused']} refused, 1 of them the check without a token), "
        f"{counts['refresh_grants']} refresh grant(s)"
    )
    lines.append(
        f"audit ({audit['checked']}): {audit['decision_made']} decision.made and "
        f"{audit['gateway_called']} gateway.called events for {audit['gateway_answers']} gateway "
        "answers"
        + (
            f" (+ up to {audit['abandoned_in_flight_max']} requests abandoned in flight by wrk)"
            if audit["abandoned_in_flight_max"]
            else ""
        )
        + (" -> one of each per call" if audit["complete"] else " -> MISMATCH")
    )
    lines += base.profile_lines(result, f"gateway (zero-latency platform, concurrency {high})")
    if "profile" in result and result["profile"].get("steps_pct"):
        lines.append(
            "by gateway step (a step includes what it awaits; the audit commits run in the "
            "writer's task, outside the call's coroutine):"
        )
        lines += [f"{pct:6.1f}%  {step}" for step, pct in result["profile"]["steps_pct"].items()]
        lines.append("top functions (where the samples were: innermost frame):")
        lines += [
            f"{pct:6.1f}%  {name}" for name, pct in result["profile"]["top_functions_pct"].items()
        ]
    return "\n".join(lines)


def _errors_of(phase: dict[str, Any]) -> int:
    """Failed answers, and calls the platform refused (a wrong token would still be 401)."""
    return int(phase["errors"]) + int(phase["platform"]["api_refused"])


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments == ["--serve-platform"]:
        return platform_main()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    base.add_arguments(parser)
    parser.set_defaults(duration=10.0)
    parser.add_argument(
        "--latency", type=int, default=20, metavar="MS", help="the slow platform's delay (20)"
    )
    args = parser.parse_args(arguments)
    base.check_arguments(parser, args)
    if not 1 <= args.latency <= 10_000 or args.concurrency < 2:
        parser.error("--latency 1..10000 ms, --concurrency at least 2 (1 is always measured)")
    if args.profile and not (
        shutil.which("py-spy") or Path(sys.executable).with_name("py-spy").exists()
    ):
        print("py-spy is not installed: no profile (pip install py-spy)", file=sys.stderr)
        args.profile = None
    result = run(args)
    if args.profile:
        layers = base.summarize_profile(args.profile, LAYERS)
        result["profile"] = {
            "dir": args.profile,
            "layers_pct": {k: round(v, 1) for k, v in layers},
            "steps_pct": {k: round(v, 1) for k, v in summarize_steps(args.profile)},
            "top_functions_pct": {k: round(v, 1) for k, v in base.top_functions(args.profile)},
        }
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else report(result))
    measured = [
        r[path]
        for v in result["variants"].values()
        for r in v.values()
        if isinstance(r, dict)
        for path in ("direct", "gateway")
    ]
    failed = any(_errors_of(p) for p in measured)
    return 1 if failed or not result["audit"]["complete"] else 0


if __name__ == "__main__":
    sys.exit(main())
