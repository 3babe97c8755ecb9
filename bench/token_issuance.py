#!/usr/bin/env python3
"""Token issuance throughput: `client_credentials` → ES256 JWT, with `GET /healthz` as ceiling.

Starts its own ValetKey (`valetkey serve`, 127.0.0.1 only, a temporary data dir, SQLite by
default or `--database-url` for PostgreSQL), creates a tenant, a sponsor, a resource and an
agent with the CLI, then drives `POST /oauth/token` and, in the same run, `GET /healthz` at a
fixed concurrency for a fixed time. It prints requests/s, p50/p99 latency and errors for
both, the ratio, where the CPU went (server, load generator, PostgreSQL, other processes),
and proves the audit events were durable: the server is killed with SIGKILL (no graceful
flush) and the log must still hold one `token.issued` event per token the client received,
with every hash link intact (`valetkey audit verify`).

The load generator is `wrk` with a Lua script when it is installed (Debian package `wrk`),
else a pure-Python one: asyncio (uvloop when available) over raw HTTP/1.1 keep-alive
connections. Every phase is bounded in time and the script stops by itself.

    .venv/bin/python bench/token_issuance.py                      # SQLite, 2 workers, 15 s
    .venv/bin/python bench/token_issuance.py --workers 1 --json
    .venv/bin/python bench/token_issuance.py --database-url "$VALETKEY_TEST_PG_URL"

With a PostgreSQL URL the bench creates a fresh database on that server and drops it at
the end (`--reuse-database` uses the URL's database as it is, with a unique tenant).
`--profile DIR` records a py-spy profile of each worker during the token phase (figures
from a profiled run are lower than the reference ones: py-spy takes CPU too).
See docs/performance.md for the method and the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"  # the only address this bench ever talks to or binds
RESOURCE = "https://crm.example/api"
SCOPE = "deals:read"
TARGETS = {1: 2300, 2: 3000}  # a Node.js OAuth server's tokens/s on these 2-core machines
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------------------
# results
@dataclass
class Phase:
    name: str
    generator: str
    duration_s: float = 0.0
    requests: int = 0  # responses received
    ok: int = 0  # 200 responses
    errors: int = 0  # non-200 responses + socket errors + timeouts
    rps: float = 0.0  # successful responses per second
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    in_flight_cut: int = 0  # requests possibly sent but never answered (wrk stops abruptly)
    connections_per_worker: list[int] = field(default_factory=list)  # sampled 1 s in
    cpu: dict[str, float] = field(default_factory=dict)  # cores used, by whom
    server_cpu_ms_per_req: float = 0.0
    postgres_cpu_ms_per_req: float = 0.0
    error_detail: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------
# CPU accounting from /proc: who used the 2 cores during a phase
def _proc_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        # utime + stime, plus cutime + cstime: the CPU of reaped children (short-lived
        # PostgreSQL backends of connections that were opened and closed during the phase)
        return int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    except (OSError, IndexError, ValueError):
        return 0


def _all_procs() -> Iterator[tuple[int, int, str]]:
    """(pid, ppid, comm) of every process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                raw = handle.read()
        except OSError:
            continue
        head, _, rest = raw.rpartition(b")")
        comm = head.split(b"(", 1)[1].decode(errors="replace")
        yield int(entry), int(rest.split()[1]), comm


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in _all_procs():
        children.setdefault(ppid, []).append(pid)
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


def _system_busy_ticks() -> int:
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values[:8]) - idle


class CpuMeter:
    """Cores used during a phase by the server tree, the generator, PostgreSQL and the rest."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def snapshot(self) -> dict[str, int]:
        server = _descendants(self.server_pid)
        snap = {"server": 0, "postgres": 0, "wrk": 0}
        for pid, _, comm in _all_procs():
            if pid in server:
                snap["server"] += _proc_ticks(pid)
            elif comm.startswith("postgres"):
                snap["postgres"] += _proc_ticks(pid)
            elif comm == "wrk":
                snap["wrk"] += _proc_ticks(pid)
        usage = os.times()
        snap["self"] = round((usage.user + usage.system) * CLK_TCK)
        snap["total"] = _system_busy_ticks()
        snap["t"] = time.monotonic_ns()
        return snap

    @staticmethod
    def delta(before: dict[str, int], after: dict[str, int], wrk_total: int) -> dict[str, float]:
        seconds = (after["t"] - before["t"]) / 1e9
        d = {k: after[k] - before[k] for k in ("server", "postgres", "wrk", "self", "total")}
        # wrk exits before the closing snapshot: its ticks come from its rusage instead.
        generator = wrk_total + d["self"] + d["wrk"]
        other = d["total"] - d["server"] - d["postgres"] - generator
        cores = {
            "server": d["server"],
            "load_generator": generator,
            "postgres": d["postgres"],
            "other": max(other, 0),
            "machine": d["total"],
        }
        return {k: round(v / CLK_TCK / seconds, 2) for k, v in cores.items()}


# ----------------------------------------------------------------------------------------
# load generators
def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "VKBENCH %d %d %d %d %d %d %d %d %d %d %d\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


# With several bodies, each connection sends them in turn (a mix of requests).
_WRK_ROTATE = """
local bodies, turn = {%s}, 0
request = function()
  turn = turn %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[turn])
end
"""


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_wrk(
    wrk: str,
    port: int,
    path: str,
    method: str,
    headers: dict[str, str],
    body: str | list[str],
    concurrency: int,
    duration: float,
    workdir: Path,
    name: str,
) -> Phase:
    script = workdir / f"{name}.lua"
    bodies = [body] if isinstance(body, str) else body
    lines = [f"wrk.method = {_lua_string(method)}"]
    if bodies[0]:
        lines.append(f"wrk.body = {_lua_string(bodies[0])}")
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()]
    if len(bodies) > 1:
        lines.append(_WRK_ROTATE % ", ".join(_lua_string(b) for b in bodies))
    script.write_text("\n".join(lines) + "\n" + _WRK_DONE)
    threads = max(1, min(2, concurrency))
    seconds = max(1, round(duration))
    command = [
        wrk,
        "-t",
        str(threads),
        "-c",
        str(concurrency),
        "-d",
        f"{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        f"http://{HOST}:{port}{path}",
    ]
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 30, check=False
    ).stdout
    line = next((x for x in out.splitlines() if x.startswith("VKBENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    (requests, dur_us, connect, read, write, status, timeout, p50, p90, p99, pmax) = (
        int(v) for v in line.split()[1:]
    )
    phase = Phase(name, "wrk", duration_s=dur_us / 1e6, requests=requests)
    phase.ok = requests - status
    phase.error_detail = {
        "non_200": status,
        "connect": connect,
        "read": read,
        "write": write,
        "timeout": timeout,
    }
    phase.errors = sum(phase.error_detail.values())
    phase.rps = phase.ok / phase.duration_s if phase.duration_s else 0.0
    phase.p50_ms, phase.p90_ms, phase.p99_ms, phase.max_ms = (
        p50 / 1000,
        p90 / 1000,
        p99 / 1000,
        pmax / 1000,
    )
    phase.in_flight_cut = concurrency  # wrk drops the requests in flight when time is up
    return phase


async def _py_worker(
    port: int,
    requests: list[bytes],
    deadline: float,
    latencies: list[float],
    counts: dict[str, int],
) -> None:
    """One keep-alive connection: send, read the whole response, repeat until the deadline
    (the requests in turn)."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    clock = time.perf_counter
    turn = 0
    try:
        while clock() < deadline:
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(HOST, port)
                except OSError:
                    counts["connect"] += 1
                    await asyncio.sleep(0.01)
                    continue
            assert reader is not None
            start = clock()
            try:
                writer.write(requests[turn % len(requests)])
                turn += 1
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
                lower = head.lower()
                at = lower.find(b"\r\ncontent-length:")
                if at < 0:
                    raise ValueError("no content-length")
                end = lower.find(b"\r\n", at + 2)
                length = int(lower[at + 17 : end])
                if length:
                    await asyncio.wait_for(reader.readexactly(length), 5.0)
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
            if b"\r\nconnection: close" in lower:
                writer.close()
                writer = None
    finally:
        if writer is not None:
            writer.close()


def run_python(
    port: int,
    path: str,
    method: str,
    headers: dict[str, str],
    body: str | list[str],
    concurrency: int,
    duration: float,
    name: str,
) -> Phase:
    head = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: keep-alive"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    requests = []
    for one in [body] if isinstance(body, str) else body:
        length = [f"Content-Length: {len(one.encode())}"] if one or method == "POST" else []
        requests.append(("\r\n".join(head + length) + "\r\n\r\n" + one).encode())
    latencies: list[float] = []
    counts = dict.fromkeys(("requests", "non_200", "connect", "read", "timeout"), 0)

    async def drive() -> float:
        start = time.perf_counter()
        deadline = start + duration
        tasks = []
        for _ in range(concurrency):
            tasks.append(
                asyncio.create_task(_py_worker(port, requests, deadline, latencies, counts))
            )
            # Open the connections one by one: a burst lets one uvicorn worker accept most.
            await asyncio.sleep(0.002)
        await asyncio.wait_for(asyncio.gather(*tasks), duration + 30)
        return time.perf_counter() - start

    elapsed = _run_loop(drive())
    latencies.sort()
    phase = Phase(name, "python", duration_s=elapsed, requests=counts["requests"])
    phase.ok = counts["requests"] - counts["non_200"]
    phase.error_detail = {k: v for k, v in counts.items() if k != "requests"}
    phase.errors = sum(phase.error_detail.values())
    phase.rps = phase.ok / elapsed if elapsed else 0.0
    phase.p50_ms = _percentile(latencies, 50) * 1000
    phase.p90_ms = _percentile(latencies, 90) * 1000
    phase.p99_ms = _percentile(latencies, 99) * 1000
    phase.max_ms = (latencies[-1] if latencies else 0.0) * 1000
    return phase  # every request sent got its answer: in_flight_cut stays 0


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# ----------------------------------------------------------------------------------------
# the server and its data
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="valetkey-bench-"))
        self.port = args.port or _free_port()
        self.tenant = "bench-" + secrets.token_hex(4)
        self.database_url = args.database_url or ""
        self.created_database: tuple[str, str] | None = None  # (admin dsn, name)
        self.server: subprocess.Popen[bytes] | None = None
        self.log = self.tmp / "server.log"
        self.cli = _cli_command()
        self.env = dict(os.environ)
        for key in list(self.env):
            if key.startswith("VALETKEY_"):
                del self.env[key]
        self.env.update(
            VALETKEY_DATA_DIR=str(self.tmp / "data"),
            VALETKEY_ISSUER=f"http://{HOST}:{self.port}",
            VALETKEY_LOG_LEVEL="info",
        )

    # set-up ------------------------------------------------------------------------------
    def prepare_database(self) -> None:
        if not self.database_url:
            return
        if not self.database_url.startswith("postgresql"):
            raise SystemExit("--database-url: only postgresql+asyncpg:// URLs are supported")
        if not self.args.reuse_database:
            name = "valetkey_bench_" + secrets.token_hex(4)
            admin = _asyncpg_dsn(self.database_url)
            _run_loop(_pg_execute(admin, f'CREATE DATABASE "{name}"'))
            self.created_database = (admin, name)
            parts = urllib.parse.urlsplit(self.database_url)
            self.database_url = urllib.parse.urlunsplit(parts._replace(path="/" + name))
        self.env["VALETKEY_DATABASE_URL"] = self.database_url

    def valetkey(self, *argv: str) -> Any:
        done = subprocess.run(
            [*self.cli, *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"valetkey {' '.join(argv)} failed: {done.stderr.strip()}")
        return json.loads(done.stdout) if "--json" in argv else done.stdout

    def create_identities(self, scopes: Sequence[str] = (SCOPE,)) -> tuple[str, str]:
        email = f"ops@{self.tenant}.example"
        scoped = [arg for scope in scopes for arg in ("--scope", scope)]
        self.valetkey("tenants", "create", self.tenant, "--json")
        self.valetkey(
            "users", "create", email, "--tenant", self.tenant, "--role", "admin", "--json"
        )
        self.valetkey("resources", "create", RESOURCE, "--tenant", self.tenant, *scoped, "--json")
        agent = self.valetkey(
            "agents",
            "create",
            "bench-agent",
            "--tenant",
            self.tenant,
            "--sponsor",
            email,
            *scoped,
            "--json",
        )
        return agent["client_id"], agent["client_secret"]

    def start_server(self) -> None:
        command = [
            *self.cli,
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            str(self.args.workers),
        ]
        with self.log.open("wb") as log:
            self.server = subprocess.Popen(
                command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: one kill stops every worker
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log.read_text()[-3000:]}")
            started = self.log.read_text(errors="replace").count("Application startup complete")
            if started >= self.args.workers and _get(self.port, "/healthz")[0] == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"the server did not start in 60 s:\n{self.log.read_text()[-3000:]}")

    def worker_pids(self) -> list[int]:
        assert self.server is not None
        if self.args.workers == 1:
            return [self.server.pid]
        pids = []
        for pid in _descendants(self.server.pid) - {self.server.pid}:
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(pid)
        return sorted(pids)

    def kill_server(self) -> None:
        """SIGKILL, no graceful shutdown: what was acknowledged must already be on disk."""
        if self.server is None or self.server.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.server.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.server.wait(10)

    # audit check -------------------------------------------------------------------------
    def count_issued(self) -> tuple[int, int]:
        """(token.issued events, distinct jti among them) for the bench tenant."""
        sql = (
            "SELECT count(*), count(DISTINCT e.jti) FROM audit_events e "
            "JOIN tenants t ON t.id = e.tenant_id WHERE t.name = {p} AND e.type = 'token.issued'"
        )
        total, distinct = self.fetch_one(sql, self.tenant)
        return int(total), int(distinct)

    def fetch_one(self, sql: str, param: Any) -> tuple[Any, ...]:
        """The first row of `sql` on the bench's database; `{p}` in it stands for `param`."""
        if self.database_url:
            row = _run_loop(
                _pg_fetchrow(_asyncpg_dsn(self.database_url), sql.format(p="$1"), param)
            )
            return tuple(row)
        with contextlib.closing(sqlite3.connect(self.tmp / "data" / "valetkey.db")) as conn:
            return tuple(conn.execute(sql.format(p="?"), (param,)).fetchone())

    def cleanup(self) -> None:
        self.kill_server()
        if self.created_database is not None:
            admin, name = self.created_database
            with contextlib.suppress(Exception):
                _run_loop(_pg_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _connections_per_worker(port: int, pids: list[int]) -> list[int]:
    """Established connections to `port` held by each worker (how evenly they were spread)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            for line in list(handle)[1:]:
                cols = line.split()
                if cols[3] == "01" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    counts = []
    for pid in pids:
        held = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        held += 1
        counts.append(held)
    return counts


def _wait_quiet(limit: float, say: Any) -> bool:
    """Wait until other processes use less than 0.15 of a core; False if they never did."""
    deadline = time.monotonic() + limit
    while True:
        before = _system_busy_ticks()
        time.sleep(1.0)
        busy = (_system_busy_ticks() - before) / CLK_TCK
        if busy < 0.15:
            return True
        if time.monotonic() >= deadline:
            say(f"the machine stayed busy ({busy:.2f} cores used by others); measuring anyway")
            return False
        say(f"waiting for a quiet machine ({busy:.2f} cores busy)")


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty src" if dirty else "")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _cli_command() -> list[str]:
    script = Path(sys.executable).with_name("valetkey")
    return [str(script)] if script.exists() else [sys.executable, "-m", "valetkey"]


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _pg_execute(dsn: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _pg_fetchrow(dsn: str, query: str, *params: Any) -> Any:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchrow(query, *params)
    finally:
        await conn.close()


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def client_headers(client_id: str, client_secret: str) -> dict[str, str]:
    """Headers of a form POST with `client_secret_basic` authentication."""
    basic = base64.b64encode(
        f"{urllib.parse.quote(client_id)}:{urllib.parse.quote(client_secret)}".encode()
    ).decode()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "Authorization": f"Basic {basic}",
    }


def _token_once(port: int, headers: dict[str, str], body: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://{HOST}:{port}/oauth/token", data=body.encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        if resp.status != 200:
            raise RuntimeError(f"token request answered {resp.status}")
        data: dict[str, Any] = json.loads(resp.read())
    if data.get("token_type") != "Bearer" or data.get("access_token", "").count(".") != 2:
        raise RuntimeError(f"unexpected token response: {data}")
    return data


# ----------------------------------------------------------------------------------------
# the run
def measure(
    bench: Bench,
    meter: CpuMeter,
    wrk: str | None,
    say: Any,
    name: str,
    path: str,
    method: str,
    headers: dict[str, str],
    body: str | list[str],
    seconds: float,
    profile: bool = False,
) -> Phase:
    """One phase: `seconds` of load on `path`, with the CPU used and the workers' spread
    (`body` a list: the connections send those bodies in turn)."""
    args = bench.args
    say(f"{name}: {method} {path}, concurrency {args.concurrency}, {seconds:g} s")
    spies = _start_profilers(bench, args, seconds) if profile else []
    spread: list[int] = []
    sampler = threading.Timer(
        min(1.0, seconds / 2),
        lambda: spread.extend(_connections_per_worker(bench.port, bench.worker_pids())),
    )
    sampler.start()
    before, children_before = meter.snapshot(), os.times()
    if wrk:
        result = run_wrk(
            wrk,
            bench.port,
            path,
            method,
            headers,
            body,
            args.concurrency,
            seconds,
            bench.tmp,
            name,
        )
    else:
        result = run_python(
            bench.port, path, method, headers, body, args.concurrency, seconds, name
        )
    after, children_after = meter.snapshot(), os.times()
    child_ticks = round(
        (
            children_after.children_user
            + children_after.children_system
            - children_before.children_user
            - children_before.children_system
        )
        * CLK_TCK
    )
    result.cpu = CpuMeter.delta(before, after, child_ticks if wrk else 0)
    sampler.join()
    result.connections_per_worker = spread
    if result.requests:
        server_s = result.cpu["server"] * (after["t"] - before["t"]) / 1e9
        result.server_cpu_ms_per_req = round(server_s * 1000 / result.requests, 3)
        pg_s = result.cpu["postgres"] * (after["t"] - before["t"]) / 1e9
        result.postgres_cpu_ms_per_req = round(pg_s * 1000 / result.requests, 3)
    for spy in spies:
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(30)
    return result


def find_wrk(args: argparse.Namespace) -> str | None:
    """wrk's path when it is to be the load generator, else None (the Python one)."""
    wrk = None if args.generator == "python" else shutil.which("wrk")
    if args.generator == "wrk" and wrk is None:
        raise SystemExit("--generator wrk: wrk is not installed (apt-get install wrk)")
    return wrk


def run(args: argparse.Namespace) -> dict[str, Any]:
    wrk = find_wrk(args)
    bench = Bench(args)
    say = (lambda *_: None) if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        bench.prepare_database()
        say(f"data dir {bench.tmp}; database {bench.database_url or 'SQLite (WAL)'}")
        client_id, client_secret = bench.create_identities()
        bench.start_server()
        token_headers = client_headers(client_id, client_secret)
        token_body = urllib.parse.urlencode(
            {"grant_type": "client_credentials", "resource": RESOURCE}
        )
        _token_once(bench.port, token_headers, token_body)
        acknowledged, in_flight_cut = 1, 0
        meter = CpuMeter(bench.server.pid if bench.server else 0)
        quiet = _wait_quiet(args.wait_quiet, say) if args.wait_quiet else None
        load_avg = os.getloadavg()[0]

        phase = functools.partial(measure, bench, meter, wrk, say)

        if args.warmup > 0:
            warm = phase("warm-up", "/oauth/token", "POST", token_headers, token_body, args.warmup)
            acknowledged += warm.ok
            in_flight_cut += warm.in_flight_cut
        token = phase(
            "token",
            "/oauth/token",
            "POST",
            token_headers,
            token_body,
            args.duration,
            profile=bool(args.profile),
        )
        acknowledged += token.ok
        in_flight_cut += token.in_flight_cut
        health = phase("healthz", "/healthz", "GET", {}, "", args.duration)

        bench.kill_server()
        issued, distinct = bench.count_issued()
        verify = bench.valetkey("audit", "verify", "--tenant", bench.tenant, "--json")
        # Every acknowledged token has its event. wrk abandons the requests in flight when
        # its time is up; the server may still have issued (and logged) those.
        durable = (
            acknowledged <= issued <= acknowledged + in_flight_cut
            and distinct == issued
            and bool(verify.get("ok"))
        )
        target = TARGETS.get(args.workers)
        return {
            "config": run_config(bench, wrk, load_avg, quiet),
            "token": asdict(token),
            "healthz": asdict(health),
            "ratio": round(token.rps / health.rps, 3) if health.rps else None,
            "target_tokens_per_s": target,
            "beats_target": (token.rps > target) if target else None,
            "audit": {
                "acknowledged_tokens": acknowledged,
                "token_issued_events": issued,
                "distinct_jti": distinct,
                "abandoned_in_flight_max": in_flight_cut,
                "chain_ok": bool(verify.get("ok")),
                "chain_events": verify.get("events"),
                "checked_after": "SIGKILL of the server (no graceful flush)",
                "durable": durable,
            },
        }
    finally:
        bench.cleanup()


def run_config(
    bench: Bench, wrk: str | None, load_avg: float, quiet: bool | None
) -> dict[str, Any]:
    """The run's settings and circumstances, for the result."""
    args = bench.args
    return {
        "workers": args.workers,
        "database": "postgresql" if bench.database_url else "sqlite",
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "generator": "wrk" if wrk else "python",
        "cpus": os.cpu_count(),
        "load_avg_1m_at_start": round(load_avg, 2),
        "python": sys.version.split()[0],
        "profiled": bool(args.profile),
        "machine_quiet_at_start": quiet,
        "valetkey_commit": _git_commit(),
    }


def _start_profilers(
    bench: Bench, args: argparse.Namespace, seconds: float
) -> list[subprocess.Popen[bytes]]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for pid in bench.worker_pids():
        # Collapsed stacks ("raw"): render with flamegraph.pl, speedscope or inferno. `--gil`
        # samples the thread that holds the GIL: where the Python CPU time of the worker goes
        # (C code that runs without the GIL, e.g. sqlite3 steps or fsync, is not in it).
        command = [spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds) - 1))]
        command += ["--rate", "250", "--gil", "--nonblocking", "--format", "raw"]
        command += ["--output", str(out / f"worker-{pid}.txt")]
        procs.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return procs


# Layers of the token path, matched on each sample's innermost frames first.
_LAYERS = [
    ("ES256 signing (joserfc + cryptography)", ("joserfc/", "cryptography/")),
    ("SQLite driver (aiosqlite thread hand-offs, sqlite3)", ("aiosqlite/", "sqlite3/")),
    ("PostgreSQL driver (asyncpg)", ("asyncpg/",)),
    ("SQLAlchemy (engine, pool, greenlet, compile, results)", ("sqlalchemy/", "greenlet")),
    ("audit chain and writer (valetkey.audit, audit_store)", ("valetkey/audit/", "audit_store")),
    ("form parsing (urllib.parse, read_form)", ("urllib/", "read_form")),
    ("HTTP server (uvicorn, httptools)", ("uvicorn/", "httptools")),
    ("FastAPI + Starlette (routing, middleware, responses)", ("fastapi/", "starlette/")),
    ("ValetKey token logic (oauth, identity, web, storage rows)", ("valetkey/",)),
    ("event loop, asyncio, stdlib", ("asyncio/", "uvloop", "concurrent/", "threading")),
]


def collapsed_shares(
    directory: str, label_of: Callable[[list[str]], str]
) -> list[tuple[str, float]]:
    """Share of the samples per label, over every worker's collapsed-stack file (py-spy
    `--format raw`): `label_of` names each stack (its frames, outermost first)."""
    counts: dict[str, int] = {}
    total = 0
    for path in sorted(Path(directory).glob("worker-*.txt")):
        for line in path.read_text().splitlines():
            stack, _, number = line.rpartition(" ")
            if not stack or not number.isdigit():
                continue
            label = label_of(stack.split(";"))
            counts[label] = counts.get(label, 0) + int(number)
            total += int(number)
    if not total:
        return []
    return sorted(((k, 100 * v / total) for k, v in counts.items()), key=lambda x: -x[1])


def layer_of(frames: list[str], layers: list[tuple[str, tuple[str, ...]]] = _LAYERS) -> str:
    """The layer of the innermost frame that belongs to one."""
    for frame in reversed(frames):
        match = next((n for n, keys in layers if any(k in frame for k in keys)), None)
        if match:
            return match
    return "other (stdlib, interpreter)"


def summarize_profile(
    directory: str, layers: list[tuple[str, tuple[str, ...]]] = _LAYERS
) -> list[tuple[str, float]]:
    """Share of the samples per layer, over every worker's collapsed-stack file."""
    return collapsed_shares(directory, lambda frames: layer_of(frames, layers))


def top_functions(directory: str, count: int = 15) -> list[tuple[str, float]]:
    """The functions the samples were in (innermost frame, line numbers dropped), by share."""

    def function(frames: list[str]) -> str:
        name, _, where = frames[-1].partition(" (")
        return f"{name} ({where.rsplit(':', 1)[0]})" if where else name

    return collapsed_shares(directory, function)[:count]


class StandIn:
    """A stand-in server (a platform, an MCP upstream) run by a bench script in its own
    process: `python SCRIPT FLAG` reads its config as one JSON line on stdin, prints the
    port it listens on, and exits when its stdin closes."""

    def __init__(self, name: str, script: str, flag: str, workdir: Path,
                 config: dict[str, Any], start_timeout: float) -> None:  # fmt: skip
        self.name = name
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(Path(script).resolve()), flag],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(config).encode() + b"\n")
        self.process.stdin.flush()
        ready = threading.Timer(start_timeout, self.process.kill)  # one that never starts
        ready.start()
        line = self.process.stdout.readline()
        ready.cancel()
        if not line.strip().isdigit():
            raise RuntimeError(f"the {name} did not start: {self.log.read_text()[-2000:]}")
        self.port = int(line)
        self.base = f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, wait: float = 5) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()  # it exits when its stdin ends
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def profile_lines(result: dict[str, Any], phase: str) -> list[str]:
    """The py-spy summary of a run's profiled phase, if it was profiled."""
    if "profile" not in result:
        return []
    profile = result["profile"]
    return ["", f"py-spy --gil profile of the {phase} phase ({profile['dir']}):"] + [
        f"{pct:6.1f}%  {layer}" for layer, pct in profile["layers_pct"].items()
    ]


def report(result: dict[str, Any]) -> str:
    cfg, tok, hz, audit = result["config"], result["token"], result["healthz"], result["audit"]
    tail = profile_lines(result, "token")
    lines = [
        f"ValetKey token issuance: {cfg['database']}, {cfg['workers']} worker(s), "
        f"concurrency {cfg['concurrency']}, {cfg['duration_s']:g} s per endpoint, "
        f"generator {cfg['generator']}, {cfg['cpus']} CPUs (load {cfg['load_avg_1m_at_start']} "
        "at start)",
        "",
        f"{'endpoint':<14}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'server ms CPU/req':>19}",
    ]
    for label, p in (("POST /oauth/token", tok), ("GET /healthz", hz)):
        lines.append(
            f"{label:<14}{p['rps']:>9.0f}{p['p50_ms']:>9.2f}{p['p90_ms']:>9.2f}"
            f"{p['p99_ms']:>9.2f}{p['errors']:>8}{p['server_cpu_ms_per_req']:>19.3f}"
        )
    lines.append("")
    if cfg["database"] == "postgresql":
        lines.append(f"PostgreSQL CPU per token: {tok['postgres_cpu_ms_per_req']:.3f} ms")
    lines.append(f"ratio tokens/healthz: {result['ratio']}")
    if result["target_tokens_per_s"]:
        verdict = "beats" if result["beats_target"] else "does NOT beat"
        lines.append(
            f"target: {verdict} {result['target_tokens_per_s']} tokens/s "
            f"(Node.js reference for {cfg['workers']} process(es))"
        )
    for label, p in (("token", tok), ("healthz", hz)):
        cpu = p["cpu"]
        lines.append(
            f"cores used during {label}: server {cpu['server']}, load generator "
            f"{cpu['load_generator']}, postgres {cpu['postgres']}, other processes "
            f"{cpu['other']} (machine {cpu['machine']} of {cfg['cpus']})"
        )
    if cfg["workers"] > 1:
        lines.append(
            f"connections per worker: token {tok['connections_per_worker']}, "
            f"healthz {hz['connections_per_worker']}"
        )
        spread = tok["connections_per_worker"]
        if spread and min(spread) * 2 * len(spread) < cfg["concurrency"]:
            lines.append(
                "WARNING: the kernel gave the workers uneven shares of the connections "
                "(they share one listening socket); the token figures understate the workers"
            )
    disturbed = max(tok["cpu"]["other"], hz["cpu"]["other"])
    if disturbed > 0.2:
        lines.append(
            f"WARNING: other processes used up to {disturbed} cores during the run: "
            "the figures are disturbed; run again on a quiet machine (--wait-quiet 120)"
        )
    if any(tok["error_detail"].values()):
        lines.append(f"token errors: {tok['error_detail']}")
    lines.append("")
    lines.append(
        f"audit (checked after {audit['checked_after']}): {audit['token_issued_events']} "
        f"token.issued events ({audit['distinct_jti']} distinct jti) for "
        f"{audit['acknowledged_tokens']} tokens received"
        + (
            f" (+ up to {audit['abandoned_in_flight_max']} requests abandoned in flight by wrk)"
            if audit["abandoned_in_flight_max"]
            else ""
        )
        + f"; chain verified: {audit['chain_ok']} ({audit['chain_events']} events) -> "
        + ("DURABLE" if audit["durable"] else "FAILED")
    )
    return "\n".join(lines + tail)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared with the other benches (server, load, output)."""
    parser.add_argument("--workers", type=int, default=2, help="server processes (default 2)")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per endpoint")
    parser.add_argument("--warmup", type=float, default=2.0, help="token warm-up seconds")
    parser.add_argument("--concurrency", type=int, default=16, help="connections (default 16)")
    parser.add_argument("--database-url", default="", help="postgresql+asyncpg://… (else SQLite)")
    parser.add_argument(
        "--reuse-database", action="store_true", help="use the URL's database as it is"
    )
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--profile", metavar="DIR", help="py-spy profile of each worker")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds for the machine to be idle (shared machines)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--output", metavar="FILE", help="also write the JSON result here")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 1 <= args.workers <= 16 or not 1 <= args.concurrency <= 1024:
        parser.error("--workers 1..16, --concurrency 1..1024")
    if not 1 <= args.duration <= 600:
        parser.error("--duration: 1 to 600 seconds")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    result = run(args)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if args.profile:
        result["profile"] = {
            "dir": args.profile,
            "layers_pct": {k: round(v, 1) for k, v in summarize_profile(args.profile)},
        }
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0 if result["audit"]["durable"] and result["token"]["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
