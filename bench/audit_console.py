#!/usr/bin/env python3
"""The console's audit page on a million events: how long a filtered page takes to render.

Seeds 1,000,000 audit events into a fresh SQLite database (and a PostgreSQL one when
`--pg URL` is given or `VALETKEY_TEST_PG_URL` is set) with a valid hash chain: one tenant,
20 agents, 200 users, tasks of 3 to 7 events sharing a correlation id (a token issued or
exchanged, decisions — mostly allow, some deny and approval_required —, gateway calls,
approvals requested, granted or denied, and used) spread over 30 days. The events are
chained by the store's own `chain_event` and inserted in large batches on the raw driver
(SQLite `executemany`, PostgreSQL `COPY`); the chain head is set so `valetkey audit
verify` finds every link intact. The seeded database is cached under `--cache-dir`
(default /tmp), keyed by a version and the event count, so a rerun starts in seconds.

Then it starts `valetkey serve` on that database (127.0.0.1 only, one worker), signs in to
the console as the tenant's admin and times the full `GET /console/audit` (HTTP, the
query, the page's other reads, Jinja2, the body read) with each filter: none, agent,
user, correlation id, type, decision=deny, a one-day time range, agent + decision, and the
third page through the keyset cursor; then the task timeline and, once each, a JSONL
export of the one-day range and "Verify the chain now". Each URL is fetched `--warmup`
times, then `--requests` times, one at a time; the figures are p50 / p95 / max in ms, with
the rows on the page. Target: under 300 ms.

    .venv/bin/python bench/audit_console.py                       # SQLite (+ PostgreSQL if set)
    .venv/bin/python bench/audit_console.py --pg "$VALETKEY_TEST_PG_URL" --json
    .venv/bin/python bench/audit_console.py --events 200000 --reseed

See docs/performance.md ("Console audit page") for the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).parent))
import token_issuance as base

VERSION = 1  # bump when the seeded data's shape changes: the cache key
TARGET_MS = 300.0
TENANT = "audit-bench"
ADMIN = "admin@audit-bench.example"
PASSWORD = "audit bench password 1"
RESOURCE = "https://crm.audit-bench.example"
AGENTS, USERS, DAYS = 20, 200, 30
SCOPES = ("deals:read", "deals:write", "contacts:read", "mail:send")
BATCH = 20_000
COLUMNS = (
    "tenant_id", "seq", "id", "type", "ts_us", "correlation_id", "outcome", "reason",
    "agent_id", "user_id", "jti", "data", "prev_hash", "hash", "decision",
)  # fmt: skip


# ----------------------------------------------------------------------------------------
# the events: realistic tasks
ACTIONS = [
    ("crm:deals.read", "read", "crm:deals/{n}"),
    ("crm:contacts.read", "read", "crm:contacts/{n}"),
    ("crm:deals.write", "write", "crm:deals/{n}"),
    ("mail:messages.send", "send", "mail:messages"),
    ("crm:deals.delete", "delete", "crm:deals/{n}"),
]
REQUESTS = ["What is the status of the Initech deal?", "Book a call with Acme on Friday",
            "Send the Q3 numbers to Dana", "Clean up the duplicate Acme deal", ""]  # fmt: skip
DENIALS = [
    ("insufficient_scope", "the agent's token does not hold deals:write"),
    ("policy", "forbidden by no-huge-reads"),
    ("outside_mandate", "the task's mandate does not cover crm:deals.delete"),
]


class Tasks:
    """Events as `AuditEvent`s, task after task, timestamps rising over `DAYS` days."""

    def __init__(self, tenant_id: str, agents: list[str], users: list[str], n: int) -> None:
        from valetkey.audit.events import AuditEvent

        self.event = AuditEvent
        self.tenant_id = tenant_id
        self.rng = random.Random(20261130)
        self.agents = agents
        self.weights = [1 / (i + 1) ** 0.7 for i in range(len(agents))]  # some are busier
        self.users = users
        self.n = n
        self.end = time.time()
        self.start = self.end - DAYS * 86400
        self.spacing = DAYS * 86400 / (n / 4.6)  # ~4.6 events per task on average
        self.ts = self.start
        self.serial = 0

    def __iter__(self) -> Iterator[Any]:
        made, task = 0, 0
        while made < self.n:
            base_ts = self.start + task * self.spacing + self.rng.random() * self.spacing * 0.3
            self.ts = max(self.ts, base_ts)
            for event in self._task():
                if made == self.n:
                    return
                yield event
                made += 1
            task += 1

    def _at(self) -> float:
        self.ts += 0.02 + self.rng.random() * 0.8
        return self.ts

    def _task(self) -> list[Any]:
        rng, ev = self.rng, self.event
        agent = rng.choices(self.agents, self.weights)[0]
        user = rng.choice(self.users) if rng.random() < 0.7 else None
        cid = "cor_" + rng.randbytes(10).hex()
        jti = "jti_" + rng.randbytes(10).hex()
        common = {"agent_id": agent, "user_id": user}
        kind = "token.exchanged" if user else "token.issued"
        grant = "urn:ietf:params:oauth:grant-type:token-exchange" if user else "client_credentials"
        events = [ev(kind, self.tenant_id, self._at(), cid, jti=jti, **common, data={
            "grant_type": grant, "aud": RESOURCE, "scope": " ".join(SCOPES[:2]),
            "exp": int(self.ts) + 900, "kid": "key_audit_bench"})]  # fmt: skip
        roll = rng.random()
        steps = 1 if roll < 0.55 else 2
        for step in range(steps):
            action, klass, where = rng.choice(ACTIONS[:4])
            said = {"user_request": rng.choice(REQUESTS), "channel": "chat"}
            intent = {"action": action, "resource": where.format(n=rng.randrange(1, 9999)),
                      "context": said}  # fmt: skip
            if roll > 0.96 and step == 0:  # an approval round
                events += self._approval(cid, jti, common, intent)
                continue
            deny = rng.random() < 0.09
            events.append(self._decision(cid, jti, common, intent, klass,
                                         "deny" if deny else "allow"))  # fmt: skip
            if not deny:
                events.append(self._gateway(cid, jti, common, intent))
        return events

    def _decision(
        self, cid: str, jti: str, common: dict[str, Any], intent: dict[str, Any], klass: str,
        verdict: str, approval_id: str | None = None,
    ) -> Any:  # fmt: skip
        self.serial += 1
        reasons, reason = [], None
        if verdict == "deny":
            code, message = self.rng.choice(DENIALS)
            reasons, reason = [{"code": code, "message": message}], f"{code}: {message}"
        elif verdict == "approval_required":
            reasons = [{"code": "approval_required", "message": "a person must approve this"}]
        data = {"decision_id": f"dec_{self.serial:012d}", "decision": verdict, "intent": intent,
                "class": klass, "reasons": reasons, "policies": ["allow-read-write"],
                "policy_version": 3, "flags": []}  # fmt: skip
        if approval_id:
            data["approval_id"] = approval_id
        return self.event(
            "decision.made", self.tenant_id, self._at(), cid, jti=jti, **common,
            outcome="failure" if verdict == "deny" else "success", reason=reason, data=data,
        )  # fmt: skip

    def _gateway(self, cid: str, jti: str, common: dict[str, Any], intent: dict[str, Any]) -> Any:
        status = 200 if self.rng.random() < 0.97 else 502
        return self.event(
            "gateway.called", self.tenant_id, self._at(), cid, jti=jti, **common,
            outcome="success" if status < 400 else "failure",
            reason=None if status < 400 else "the platform did not answer",
            data={"provider": "crm", "connection_id": "con_audit_bench", "method": "GET",
                  "path": "/api/" + intent["resource"].split(":", 1)[1], "status": status,
                  "decision_id": f"dec_{self.serial:012d}", "sanitized": False,
                  "latency_ms": round(20 + self.rng.random() * 180, 2)},
        )  # fmt: skip

    def _approval(
        self, cid: str, jti: str, common: dict[str, Any], intent: dict[str, Any]
    ) -> list[Any]:
        approval_id = "apr_" + self.rng.randbytes(10).hex()
        asked = {"approval_id": approval_id, "intent": intent, "class": "delete"}
        delete = {**intent, "action": "crm:deals.delete"}
        granted = self.rng.random() < 0.8
        out = [
            self._decision(cid, jti, common, delete, "delete", "approval_required", approval_id),
            self.event("approval.requested", self.tenant_id, self._at(), cid, **common,
                       data={**asked, "notifications": 1}),
            self.event("approval.granted" if granted else "approval.denied", self.tenant_id,
                       self._at(), cid, **common, data={**asked, "by": self.users[0]}),
        ]  # fmt: skip
        if granted:
            out.append(self._decision(cid, jti, common, delete, "delete", "allow", approval_id))
            out.append(self.event("approval.used", self.tenant_id, self._at(), cid, **common,
                                  data=asked))  # fmt: skip
        return out


def chained_rows(
    tasks: Tasks, seq: int, prev: str, encode: bool = True
) -> Iterator[list[tuple[Any, ...]]]:
    """Rows in batches, chained after (`seq`, `prev`) by the store's own `chain_event`."""
    from valetkey.storage.audit_store import chain_event

    batch: list[tuple[Any, ...]] = []
    for event in tasks:
        seq += 1
        stored = chain_event(event, seq, prev)
        prev = stored.hash
        data = orjson.dumps(stored.data).decode() if encode else stored.data
        batch.append((stored.tenant_id, stored.seq, stored.id, stored.type, stored.ts_us,
                      stored.correlation_id, stored.outcome, stored.reason, stored.agent_id,
                      stored.user_id, stored.jti, data, stored.prev_hash, stored.hash,
                      stored.decision))  # fmt: skip
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


# ----------------------------------------------------------------------------------------
# seeding, cached
def settings_for(data_dir: Path, database_url: str) -> Any:
    from valetkey.config import Settings

    return Settings(data_dir=data_dir, database_url=database_url)


async def _directory(data_dir: Path, database_url: str) -> dict[str, Any]:
    """The tenant, its admin (with a password), 200 users, a resource and 20 agents, made
    through the identity service like the CLI does (their events open the chain)."""
    from valetkey.runtime import Runtime

    rt = await Runtime.open(settings_for(data_dir, database_url))
    try:
        service = rt.identity("cor_audit_bench_setup")
        tenant = await service.create_tenant(TENANT)
        await service.create_user(tenant.id, ADMIN, ["admin"])
        await service.set_password(tenant.id, ADMIN, PASSWORD)
        await service.create_resource(tenant.id, RESOURCE, SCOPES)
        users = [
            (await service.create_user(tenant.id, f"user{n:03d}@audit-bench.example", [])).id
            for n in range(USERS)
        ]
        agents = [
            (await service.create_agent(tenant.id, f"agent-{n:02d}", ADMIN, SCOPES[:2]))[0].id
            for n in range(AGENTS)
        ]
        head = await rt.audit_store.head(tenant.id)
        assert head is not None
        return {"tenant_id": tenant.id, "users": users, "agents": agents,
                "head": (head.seq, head.hash)}  # fmt: skip
    finally:
        await rt.close()


def seed_sqlite(data_dir: Path, n: int, say: Any) -> dict[str, Any]:
    path = data_dir / "valetkey.db"
    url = f"sqlite+aiosqlite:///{path}"
    made = asyncio.run(_directory(data_dir, url))
    seq, prev = made["head"]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")  # 1 GB while the indexes grow
    insert = f"INSERT INTO audit_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * 15)})"
    tasks = Tasks(made["tenant_id"], made["agents"], made["users"], n)
    started, done = time.monotonic(), 0
    conn.execute("BEGIN")
    for batch in chained_rows(tasks, seq, prev):
        conn.executemany(insert, batch)
        done += len(batch)
        seq, prev = batch[-1][1], batch[-1][13]
        if done % 200_000 == 0:
            say(f"  {done:,} events ({time.monotonic() - started:.0f} s)")
    conn.execute("UPDATE audit_heads SET seq = ?, hash = ? WHERE tenant_id = ?",
                 (seq, prev, made["tenant_id"]))  # fmt: skip
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return _summary(made, tasks, seq, started)


async def seed_postgres(data_dir: Path, url: str, n: int, say: Any) -> dict[str, Any]:
    import asyncpg

    made = await _directory(data_dir, url)
    seq, prev = made["head"]
    conn = await asyncpg.connect(base._asyncpg_dsn(url))
    tasks = Tasks(made["tenant_id"], made["agents"], made["users"], n)
    started, done = time.monotonic(), 0
    try:
        async with conn.transaction():
            for batch in chained_rows(tasks, seq, prev):
                await conn.copy_records_to_table("audit_events", records=batch, columns=COLUMNS)
                done += len(batch)
                seq, prev = batch[-1][1], batch[-1][13]
                if done % 200_000 == 0:
                    say(f"  {done:,} events ({time.monotonic() - started:.0f} s)")
            await conn.execute("UPDATE audit_heads SET seq = $1, hash = $2 WHERE tenant_id = $3",
                               seq, prev, made["tenant_id"])  # fmt: skip
        await conn.execute("ANALYZE audit_events")  # what autovacuum does after a bulk load
    finally:
        await conn.close()
    return _summary(made, tasks, seq, started)


def _summary(made: dict[str, Any], tasks: Tasks, seq: int, started: float) -> dict[str, Any]:
    """What the measurements need to know of the seeded data."""
    return {
        "tenant_id": made["tenant_id"], "events": seq, "seed_s": time.monotonic() - started,
        "start": tasks.start, "end": tasks.end,
        "agent": made["agents"][3],  # a busy one, not the busiest
        "user": "user017@audit-bench.example",
    }  # fmt: skip


def _pg_database_url(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


async def _pg_exists(admin_url: str, name: str) -> bool:
    import asyncpg

    conn = await asyncpg.connect(base._asyncpg_dsn(admin_url), timeout=10)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


def seeded(args: argparse.Namespace, backend: str, say: Any) -> dict[str, Any]:
    """The cached seeded database for `backend` (seeding it first when missing)."""
    key = f"v{VERSION}-{args.events}"
    home = Path(args.cache_dir) / f"valetkey-bench-audit-{backend}-{key}"
    marker = home / "seeded.json"
    database_url = ""
    if backend == "postgresql":
        digest = hashlib.sha256(args.pg.encode()).hexdigest()[:8]
        home = home.with_name(home.name + "-" + digest)
        marker = home / "seeded.json"
        name = f"valetkey_bench_audit_{key.replace('-', '_')}"
        database_url = _pg_database_url(args.pg, name)
        if marker.exists() and not args.reseed and asyncio.run(_pg_exists(args.pg, name)):
            return {**json.loads(marker.read_text()), "cached": True}
        asyncio.run(
            base._pg_execute(base._asyncpg_dsn(args.pg), f'DROP DATABASE IF EXISTS "{name}"')
        )
        asyncio.run(base._pg_execute(base._asyncpg_dsn(args.pg), f'CREATE DATABASE "{name}"'))
    elif marker.exists() and not args.reseed:
        return {**json.loads(marker.read_text()), "cached": True}
    shutil.rmtree(home, ignore_errors=True)
    (home / "data").mkdir(parents=True)
    say(f"seeding {args.events:,} events into {backend} ({home}) …")
    if backend == "sqlite":
        result = seed_sqlite(home / "data", args.events, say)
    else:
        result = asyncio.run(seed_postgres(home / "data", database_url, args.events, say))
    info = {"backend": backend, "home": str(home), "database_url": database_url, **result}
    marker.write_text(json.dumps(info, indent=1))
    say(f"seeded in {result['seed_s']:.0f} s")
    return {**info, "cached": False}


# ----------------------------------------------------------------------------------------
# the server and the measurements
class Server:
    """`valetkey serve` on the seeded database, 127.0.0.1 only, one worker."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.port = base._free_port()
        self.url = f"http://{base.HOST}:{self.port}"
        home = Path(info["home"])
        self.log = home / "server.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("VALETKEY_")}
        self.env.update(VALETKEY_DATA_DIR=str(home / "data"), VALETKEY_ISSUER=self.url,
                        VALETKEY_LOG_LEVEL="warning")  # fmt: skip
        if info["database_url"]:
            self.env["VALETKEY_DATABASE_URL"] = info["database_url"]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        command = [*base._cli_command(), "serve", "--host", base.HOST, "--port", str(self.port),
                   "--workers", "1"]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log.read_text()[-3000:]}")
            if base._get(self.port, "/healthz")[0] == 200:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"the server did not start:\n{self.log.read_text()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def sign_in(client: httpx.Client) -> None:
    """The console's own sign-in form, as a browser fills it."""
    page = client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text[:500]
    done = client.post("/console/login", data={"csrf": csrf.group(1), "tenant": TENANT,
                       "email": ADMIN, "password": PASSWORD, "next": "/console/audit"})  # fmt: skip
    if done.status_code != 303:
        raise SystemExit(f"signing in failed: {done.status_code} {done.text[:300]}")


def _older(page: str) -> str:
    found = re.search(r'<a href="([^"]+)" rel="next">Older</a>', page)
    assert found, "no Older link"
    return found.group(1).replace("&amp;", "&")


def _rows(page: str) -> int:
    """Events on a page: the log's table rows, or the timeline's items."""
    if 'class="timeline"' in page:
        return page.split('class="timeline"', 1)[1].split("</ol>", 1)[0].count("<li")
    return page.count("<details>")


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def timed(client: httpx.Client, path: str, warmup: int, n: int) -> dict[str, Any]:
    """`warmup` + `n` full GETs one after another: status, body and all."""
    times, status, rows = [], 0, 0
    for i in range(warmup + n):
        started = time.perf_counter()
        response = client.get(path)
        body = response.text
        elapsed = (time.perf_counter() - started) * 1000
        status, rows = response.status_code, _rows(body)
        if status != 200:
            raise SystemExit(f"GET {path} answered {status}: {body[:500]}")
        if i >= warmup:
            times.append(elapsed)
    return {"path": path, "rows": rows, "p50_ms": round(_pct(times, 50), 1),
            "p95_ms": round(_pct(times, 95), 1), "max_ms": round(max(times), 1)}  # fmt: skip


def _local(ts: float) -> str:
    """A `datetime-local` value (UTC) for a timestamp."""
    return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(ts))


def measure(info: dict[str, Any], args: argparse.Namespace, say: Any) -> dict[str, Any]:
    with Server(info) as server, httpx.Client(base_url=server.url, timeout=600) as client:
        sign_in(client)
        start = info["start"] + 15 * 86400
        day = start - start % 86400
        since, until = _local(day), _local(day + 86400)
        one_day = f"since={since}&until={until}"
        first_day = client.get(f"/console/audit?{one_day}").text
        cor = re.search(r'href="/console/audit/task/([^"]+)"', first_day)
        assert cor, "no correlation id on the one-day page"
        correlation = urllib.parse.unquote(cor.group(1))
        agent, user = info["agent"], info["user"]
        page2 = _older(client.get("/console/audit").text)
        page3 = _older(client.get(page2).text)
        cases = [
            ("no filter", "/console/audit"),
            ("agent", f"/console/audit?agent={agent}"),
            ("user (email)", f"/console/audit?user={urllib.parse.quote(user)}"),
            ("correlation id", f"/console/audit?correlation={correlation}"),
            ("type = approval.denied", "/console/audit?type=approval.denied"),
            ("decision = deny", "/console/audit?decision=deny"),
            ("one day (from/to)", f"/console/audit?{one_day}"),
            ("agent + decision = deny", f"/console/audit?agent={agent}&decision=deny"),
            ("user + decision = deny", f"/console/audit?user={urllib.parse.quote(user)}"
             "&decision=deny"),
            ("agent + one day", f"/console/audit?agent={agent}&{one_day}"),
            ("page 3 (cursor)", page3),
            ("task timeline", f"/console/audit/task/{correlation}"),
        ]  # fmt: skip
        results = []
        for label, path in cases:
            result = {"label": label, **timed(client, path, args.warmup, args.requests)}
            say(f"  {label:28s} p50 {result['p50_ms']:7.1f}  p95 {result['p95_ms']:7.1f}  "
                f"max {result['max_ms']:7.1f} ms  ({result['rows']} rows)")  # fmt: skip
            results.append(result)
        extra = {}
        started = time.perf_counter()
        size = lines = 0
        with client.stream("GET", f"/console/audit/export?{one_day}&format=jsonl") as stream:
            for chunk in stream.iter_bytes():
                size += len(chunk)
                lines += chunk.count(b"\n")
        extra["export"] = {"events": lines, "bytes": size,
                           "seconds": round(time.perf_counter() - started, 2)}  # fmt: skip
        say(f"  export (one day, JSONL): {lines:,} events, {size / 1e6:.1f} MB in "
            f"{extra['export']['seconds']} s")  # fmt: skip
        extra["verify"] = verify(client, args, say)
    return {"cases": results, **extra}


def verify(client: httpx.Client, args: argparse.Namespace, say: Any) -> dict[str, Any]:
    """ "Verify the chain now", and the log page's latency while it runs."""
    page = client.get("/console/audit").text
    csrf = re.search(r'action="/console/audit/verify">\s*<input type="hidden" name="csrf" '
                     r'value="([^"]+)"', page)  # fmt: skip
    assert csrf, "no verify form"
    started = time.perf_counter()
    client.post("/console/audit/verify", data={"csrf": csrf.group(1)})
    during: list[float] = []
    while True:
        t0 = time.perf_counter()
        body = client.get("/console/audit").text
        during.append((time.perf_counter() - t0) * 1000)
        if any(f'">{word}</span>' in body for word in ("intact", "broken", "not verified")):
            break
        if time.perf_counter() - started > 1800:
            raise SystemExit("the verification took more than 30 minutes")
        time.sleep(0.5)
    seconds = time.perf_counter() - started
    intact = '">intact</span>' in body
    say(f"  verify: {'intact' if intact else 'BROKEN'} after {seconds:.1f} s; the log page "
        f"meanwhile p50 {_pct(during, 50):.0f} ms, max {max(during):.0f} ms")  # fmt: skip
    return {"intact": intact, "seconds": round(seconds, 1),
            "page_while_verifying_p50_ms": round(_pct(during, 50), 1),
            "page_while_verifying_max_ms": round(max(during), 1)}  # fmt: skip


def report(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    backends = list(runs)
    lines = [f"{args.requests} requests each after {args.warmup} warm-up, one at a time; "
             "ms for the full GET (p50 / p95 / max)", "",
             "| page | " + " | ".join(backends) + " | rows |",
             "|---|" + "---:|" * len(backends) + "---:|"]  # fmt: skip
    first = runs[backends[0]]["cases"]
    for i, case in enumerate(first):
        cells = []
        for name in backends:
            c = runs[name]["cases"][i]
            cells.append(f"{c['p50_ms']:.1f} / {c['p95_ms']:.1f} / {c['max_ms']:.1f}")
        lines.append(f"| {case['label']} | " + " | ".join(cells) + f" | {case['rows']} |")
    worst = max(c["p95_ms"] for r in runs.values() for c in r["cases"])
    verdict = "met" if worst < TARGET_MS else "NOT met"
    lines += ["", f"target: every page under {TARGET_MS:g} ms -> {verdict} (worst p95 {worst} ms)"]
    for name, r in runs.items():
        e, v = r["export"], r["verify"]
        lines.append(
            f"{name}: {r['events']:,} events (seeded in {r['seed_s']:.0f} s"
            f"{', cached' if r['cached'] else ''}); export of one day: {e['events']:,} events, "
            f"{e['bytes'] / 1e6:.1f} MB in {e['seconds']} s; verify: "
            f"{'intact' if v['intact'] else 'BROKEN'} in {v['seconds']} s, the log page meanwhile "
            f"p50 {v['page_while_verifying_p50_ms']} ms, max {v['page_while_verifying_max_ms']} ms"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events to seed")
    parser.add_argument(
        "--pg", default=os.environ.get("VALETKEY_TEST_PG_URL", ""),
        help="a PostgreSQL URL (postgresql+asyncpg://…) to measure too",
    )  # fmt: skip
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--cache-dir", default="/tmp", help="where seeded databases are kept")
    parser.add_argument("--reseed", action="store_true", help="seed again even when cached")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per page first")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--output", help="also write the JSON results to this file")
    args = parser.parse_args(argv)
    if not 1000 <= args.events <= 10_000_000:
        parser.error("--events: 1,000 to 10,000,000")
    backends = ([] if args.no_sqlite else ["sqlite"]) + (["postgresql"] if args.pg else [])
    if not backends:
        parser.error("nothing to measure: --no-sqlite without --pg")

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    runs = {}
    start_load = os.getloadavg()[0]
    for backend in backends:
        info = seeded(args, backend, say)
        say(f"{backend}: measuring on {info['events']:,} events")
        runs[backend] = {**info, **measure(info, args, say)}
    result = {"version": VERSION, "commit": base._git_commit(), "runs": runs,
              "load_average_1m": {"start": start_load, "end": os.getloadavg()[0]}}  # fmt: skip
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else report(runs, args))
    if not args.json:
        print(f"load average (1 min) at the start {start_load:.2f}, at the end "
              f"{result['load_average_1m']['end']:.2f} on {os.cpu_count()} cores")  # fmt: skip
    failed = any(c["p95_ms"] >= TARGET_MS for r in runs.values() for c in r["cases"])
    return 1 if failed or not all(r["verify"]["intact"] for r in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
