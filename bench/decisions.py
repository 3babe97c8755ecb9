#!/usr/bin/env python3
"""Decision throughput: `POST /v1/authorize`, with `GET /healthz` as ceiling, and in-process.

Starts its own ValetKey exactly as bench/token_issuance.py does (`valetkey serve`, 127.0.0.1
only, a temporary data dir, SQLite by default or `--database-url` for PostgreSQL) and sets
up a realistic tenant with the CLI: a resource with ten scopes, an agent holding them, ten
registered actions across the six classes, and a policy set of 20 Cedar policies (the
default's three rules, permits and forbids with `when` conditions on the context, the
resource's kind and the agent's attributes) pushed with 50 entities of the tenant's own
directory (users with roles, resources). Before the load it checks one request of each
kind the mix sends (the read the load repeats must be allowed, the delete must ask for an
approval, fail loudly otherwise); then, on the same server in the same run, a warm-up, the
allowed read (the hot path) at a fixed concurrency for a fixed time, a mix of allows,
denies and an approval request, and `GET /healthz`. It prints decisions/s, p50/p99
latency, errors and server CPU per decision for each, the ratio to healthz and the targets,
then proves every decision's `decision.made` event durable: the server is killed with
SIGKILL and the log must hold one event per 200 answer, every hash link intact.

Then, without a server, it times decisions in this process: `DecisionPoint` (structural
checks + `by_policy`, an in-memory policy store with the same actions and policies) and
the raw `CompiledPolicies.evaluate` call, with the 20 policies, with the default three, and
with the 50 stored entities merged into the request's entities (what AuthZEN does; the
`/v1/authorize` path does not merge them).

The load generators are token_issuance.py's (`wrk` when installed, else asyncio over raw
HTTP/1.1 keep-alive connections). Every phase is bounded in time and the script stops by
itself.

    .venv/bin/python bench/decisions.py                      # SQLite, 2 workers, 15 s
    .venv/bin/python bench/decisions.py --workers 1 --json
    .venv/bin/python bench/decisions.py --database-url "$VALETKEY_TEST_PG_URL"

`--database-url`, `--reuse-database`, `--generator`, `--profile DIR` (py-spy, the read
phase), `--wait-quiet` and `--output FILE` behave as in token_issuance.py; `--no-mix` skips
the mix, `--decisions N` sets the in-process count (0 skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import token_issuance as base
from valetkey.policy.cedar import DEFAULT_POLICIES

TARGET_RPS = 2000  # decisions/s over HTTP on these 2-core machines, concurrency 16
TARGET_P99_MS = 15.0
VERDICTS = ("allow", "deny", "approval_required")

# (action, class, scope): what the tenant registers; the agent holds every scope.
ACTIONS = [
    ("crm:deals.read", "read", "deals:read"),
    ("crm:contacts.read", "read", "contacts:read"),
    ("crm:reports.read", "read", "reports:read"),
    ("crm:deals.write", "write", "deals:write"),
    ("crm:contacts.write", "write", "contacts:write"),
    ("calendar:events.write", "write", "calendar:write"),
    ("crm:deals.delete", "delete", "deals:delete"),
    ("crm:contacts.export", "bulk", "contacts:export"),
    ("mail:messages.send", "send", "mail:send"),
    ("billing:invoices.pay", "spend", "billing:pay"),
]
SCOPES = [scope for _, _, scope in ACTIONS]

POLICIES = (
    DEFAULT_POLICIES
    + """
// What agents may do.
@id("read-business-records")
permit(principal is Agent, action in Action::"read", resource)
when { ["crm", "calendar", "docs"].contains(resource.kind) && context.count <= 500 };

@id("reports-from-known-channels")
permit(principal, action == Action::"crm:reports.read", resource)
when { ["chat", "api", "scheduler"].contains(context.channel) };

@id("members-read-on-their-behalf")
permit(principal, action in Action::"read", resource)
when { context.on_behalf && context has user && context.user.roles.contains("member") };

@id("contacts-written-from-chat")
permit(principal, action == Action::"crm:contacts.write", resource)
when { context.channel == "chat" && context.request != "" };

@id("calendar-writes")
permit(principal, action == Action::"calendar:events.write", resource)
when { resource.kind == "calendar" };

// What nobody may do.
@id("no-unsponsored-agents")
forbid(principal is Agent, action, resource) when { principal.sponsor == "" };

@id("quarantined-agents")
forbid(principal is Agent, action, resource) when { principal.name like "quarantine-*" };

@id("no-huge-reads")
forbid(principal, action in Action::"read", resource) when { context.count > 1000 };

@id("read-ceiling-per-hour")
forbid(principal, action in Action::"read", resource)
when { context.counters.read > 5000000 };

@id("production-writes-need-a-request")
forbid(principal, action in Action::"write", resource)
when { context.environment == "production" && context.request == "" };

@id("archive-is-read-only")
forbid(principal, action in [Action::"write", Action::"delete", Action::"bulk"], resource)
when { resource.kind == "archive" };

@id("no-staging-data-in-production")
forbid(principal, action, resource)
when { context.environment == "production" && resource.kind == "staging" };

@id("untrusted-channels")
forbid(principal, action, resource) when { ["sms", "unknown"].contains(context.channel) };

@id("send-ceiling-per-hour")
forbid(principal, action in Action::"send", resource) when { context.counters.send >= 200 };

@id("spend-cap-per-call")
forbid(principal, action in Action::"spend", resource) when { context.cost > 50000 };

@id("spend-budget-per-day")
forbid(principal, action in Action::"spend", resource)
when { context.spent_today + context.cost > 200000 };

@id("export-size")
forbid(principal, action == Action::"crm:contacts.export", resource)
when { context.count > 10000 };
"""
)


def directory_entities() -> list[dict[str, Any]]:
    """50 Cedar entities: the tenant, 40 users with roles (teams as roles), 9 resources."""
    tenant = {"type": "Tenant", "id": "acme"}
    teams = ("sales", "support", "finance", "engineering")
    found: list[dict[str, Any]] = [{"uid": tenant, "attrs": {}, "parents": []}]
    for n in range(40):
        roles = ["member", teams[n % 4]] + (["approver"] if n % 5 == 0 else [])
        roles += ["admin"] if n % 13 == 0 else []
        found.append(
            {
                "uid": {"type": "User", "id": f"user-{n:02d}"},
                "attrs": {"email": f"user{n:02d}@acme.example", "roles": roles},
                "parents": [tenant],
            }
        )
    kinds = ("crm", "crm", "crm", "calendar", "docs", "mail", "billing", "archive", "staging")
    for n, kind in enumerate(kinds):
        found.append(
            {
                "uid": {"type": "Resource", "id": f"{kind}:records/{n}"},
                "attrs": {"kind": kind},
                "parents": [],
            }
        )
    return found


CHAT = {"channel": "chat", "environment": "production"}


def intent(action: str, resource: str, said: str = "", **numbers: int) -> dict[str, Any]:
    """A `/v1/authorize` body from the chat, in production; `said`: the user's request."""
    context = {**CHAT, "user_request": said} if said else CHAT
    return {"action": action, "resource": resource, **numbers, "context": context}


# The read the load repeats: the hot path.
HOT = intent("crm:deals.read", "crm:deals/4711", "What is the status of the Initech deal?")
# The mix: (expected decision, body). Six allows, three denies, one approval request (the
# same intent each time: its pending approval is found and returned, not made again).
MIX: list[tuple[str, dict[str, Any]]] = [
    ("allow", HOT),
    ("allow", intent("crm:contacts.read", "crm:contacts/88")),
    ("allow", intent("crm:reports.read", "crm:reports/pipeline-q3", "Show me the Q3 pipeline")),
    ("allow", intent("crm:deals.read", "crm:deals?stage=won", "Deals won this month?", count=50)),
    ("allow", intent("crm:deals.write", "crm:deals/4711", "Move Initech to negotiation")),
    ("allow", intent("calendar:events.write", "calendar:events/9", "Book a call on Friday")),
    ("deny", intent("crm:deals.write", "crm:deals/4711")),  # production write, no request
    ("deny", intent("crm:deals.read", "crm:deals", count=5000)),  # no-huge-reads
    ("deny", intent("crm:deals.purge", "crm:deals/4711")),  # not a registered action
    ("approval_required", intent("crm:deals.delete", "crm:deals/4711", "Delete Initech")),
]

# Layers of the decision path, matched on each sample's innermost frames first (the JSON
# encoding cedarpy does for each call counts as Cedar).
LAYERS = [
    ("Cedar (cedarpy: request and entities to JSON, evaluation, result)", ("cedarpy/",)),
    ("token verification (joserfc, cryptography)", ("joserfc/", "cryptography/")),
    ("SQLite driver (sqlite3)", ("sqlite3/", "aiosqlite/")),
    ("PostgreSQL driver (asyncpg)", ("asyncpg/",)),
    ("SQLAlchemy", ("sqlalchemy/", "greenlet")),
    ("ValetKey storage (hot-path reads, counters, audit inserts)", ("valetkey/storage/",)),
    ("audit chain and writer (valetkey.audit)", ("valetkey/audit/",)),
    ("decision logic (valetkey.policy)", ("valetkey/policy/",)),
    ("HTTP server (uvicorn, httptools)", ("uvicorn/", "httptools")),
    ("FastAPI + Starlette (routing, middleware, body, responses)", ("fastapi/", "starlette/")),
    ("ValetKey web and OAuth (token checks, caller, JSON)", ("valetkey/",)),
    ("event loop, asyncio, stdlib", ("asyncio/", "uvloop", "concurrent/", "threading")),
]


# ----------------------------------------------------------------------------------------
# set-up and checks over HTTP
def set_up_policies(bench: base.Bench) -> None:
    """Register the actions, push the policy set with the tenant's entities."""
    for name, klass, scope in ACTIONS:
        options = ["--tenant", bench.tenant, "--class", klass, "--scope", scope, "--json"]
        bench.valetkey("actions", "add", name, *options)
    policies, entities = bench.tmp / "policies.cedar", bench.tmp / "entities.json"
    policies.write_text(POLICIES)
    entities.write_text(json.dumps(directory_entities(), indent=1))
    options = ["--tenant", bench.tenant, "--entities", str(entities), "--note", "decision bench"]
    bench.valetkey("policies", "push", str(policies), *options, "--json")


def authorize_once(port: int, token: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://{base.HOST}:{port}/v1/authorize",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"POST /v1/authorize answered {exc.code}: {exc.read()[:500]!r}") from exc
    return answer


def check_decisions(port: int, token: str) -> list[dict[str, Any]]:
    """One request of each kind before the load; any unexpected decision stops the bench."""
    seen = []
    for expected, body in MIX:
        answer = authorize_once(port, token, body)
        got = answer.get("decision")
        reasons = [r.get("code") for r in answer.get("reasons", [])]
        if got != expected:
            raise SystemExit(
                f"decision check FAILED: {body['action']} on {body['resource']} answered "
                f"{got!r} (reasons {reasons}, policies {answer.get('policies')}), "
                f"expected {expected!r}"
            )
        seen.append(
            {
                "action": body["action"],
                "resource": body["resource"],
                "decision": got,
                "reasons": reasons,
                "policies": answer.get("policies"),
            }
        )
    return seen


def count_decisions(bench: base.Bench) -> dict[str, int]:
    """`decision.made` events in the tenant's log, in all and by decision."""
    verdict = "e.data->>'decision'" if bench.database_url else "json_extract(e.data, '$.decision')"
    sums = ", ".join(f"sum(CASE WHEN {verdict} = '{v}' THEN 1 ELSE 0 END)" for v in VERDICTS)
    sql = (
        f"SELECT count(*), {sums} FROM audit_events e JOIN tenants t ON t.id = e.tenant_id "
        "WHERE t.name = {p} AND e.type = 'decision.made'"
    )
    row = bench.fetch_one(sql, bench.tenant)
    return {
        "events": int(row[0]),
        **{v: int(n or 0) for v, n in zip(VERDICTS, row[1:], strict=True)},
    }


# ----------------------------------------------------------------------------------------
# in-process rates: no server, no I/O
class MemoryPolicies:
    """The PolicyStore a DecisionPoint reads, holding the bench's actions and policy set."""

    def __init__(self, text: str, entities: list[dict[str, Any]]) -> None:
        from valetkey.policy.decision import ActionDef, PolicyVersion

        self._actions = [ActionDef(name, klass, scope) for name, klass, scope in ACTIONS]
        self._active = PolicyVersion(1, text, tuple(entities))

    async def list_actions(self, tenant_id: str) -> list[Any]:
        return list(self._actions)

    async def active_policy(self, tenant_id: str) -> Any:
        return self._active


async def _rate(n: int, step: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    for _ in range(min(n, 200)):  # warm caches (tenant cache, parsed policies)
        await step()
    start = time.perf_counter()
    for _ in range(n):
        await step()
    elapsed = time.perf_counter() - start
    return {"us_per_decision": round(elapsed / n * 1e6, 1), "decisions_per_s": round(n / elapsed)}


async def _in_process(n: int) -> dict[str, Any]:
    from valetkey.identity.models import Client, Resource, Tenant
    from valetkey.identity.scopes import conventional_implications
    from valetkey.oauth.context import TenantCache
    from valetkey.policy.cedar import CompiledPolicies, action_entities
    from valetkey.policy.decision import Caller, DecisionPoint
    from valetkey.policy.intent import parse_intent

    entities = directory_entities()
    point = DecisionPoint(MemoryPolicies(POLICIES, entities), TenantCache())  # type: ignore[arg-type]
    tenant = Tenant("ten_bench", "bench", 0.0)
    scopes = tuple(SCOPES)
    agent = Client("agt_bench", tenant.id, "agent", "bench-agent", "active", sponsor_id="usr_1")
    implies = conventional_implications(scopes)
    resources = [Resource("res_bench", tenant.id, base.RESOURCE, scopes, implies, 0.0)]
    caller = Caller(tenant, agent, None, scopes, None, "jti-bench")
    intent, _ = parse_intent(HOT)

    async def decide() -> str:
        decision = await point.structural(caller, intent, resources)
        if decision.decision == "allow" and decision.action_class is not None:
            decision = await point.by_policy(caller, intent, decision.action_class, {}, 0, False)
        return decision.decision

    if (verdict := await decide()) != "allow":
        raise SystemExit(f"in-process check FAILED: the read is {verdict!r}, expected 'allow'")
    # The exact arguments by_policy hands to evaluate, caught once.
    compiled = await point.policies(tenant)
    caught: list[tuple[Any, ...]] = []
    evaluate = compiled.evaluate
    compiled.evaluate = lambda *a: caught.append(a) or evaluate(*a)  # type: ignore[method-assign]
    await decide()
    del compiled.evaluate
    principal, action, resource, context, request_entities = caught[0]
    actions = [(name, klass) for name, klass, _ in ACTIONS]
    defaults = CompiledPolicies(DEFAULT_POLICIES, actions, 0)
    merged = request_entities + list(compiled.stored.values())

    def raw(policies: CompiledPolicies, with_entities: list[dict[str, Any]]) -> Any:
        async def step() -> str:
            return policies.evaluate(principal, action, resource, context, with_entities).decision

        return step

    variants = {
        "decision_point": ("DecisionPoint.structural + by_policy, 20 policies", decide),
        "evaluate": ("CompiledPolicies.evaluate, 20 policies", raw(compiled, request_entities)),
        "evaluate_default": (
            "CompiledPolicies.evaluate, the default 3 policies",
            raw(defaults, request_entities),
        ),
        "evaluate_with_stored": (
            f"evaluate, 20 policies + the {len(merged) - len(request_entities)} stored "
            "entities merged (AuthZEN's way)",
            raw(compiled, merged),
        ),
    }
    rates: dict[str, Any] = {
        "n": n,
        "entities_per_request": len(request_entities),
        "action_entities": len(action_entities(actions)),
    }
    for key, (label, step) in variants.items():
        rates[key] = {"label": label, "decision": await step(), **await _rate(n, step)}
    return rates


def in_process(n: int) -> dict[str, Any]:
    result: dict[str, Any] = asyncio.run(_in_process(n))
    return result


# ----------------------------------------------------------------------------------------
# the run
def run(args: argparse.Namespace) -> dict[str, Any]:
    wrk = base.find_wrk(args)
    say = (lambda *_: None) if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    bench = base.Bench(args)
    try:
        bench.prepare_database()
        say(f"data dir {bench.tmp}; database {bench.database_url or 'SQLite (WAL)'}")
        client_id, client_secret = bench.create_identities(SCOPES)
        set_up_policies(bench)
        bench.start_server()
        token_form = urllib.parse.urlencode(
            {"grant_type": "client_credentials", "resource": base.RESOURCE}
        )

        def headers() -> dict[str, str]:
            """A fresh token for each phase (access tokens live 15 minutes)."""
            token = base._token_once(
                bench.port, base.client_headers(client_id, client_secret), token_form
            )["access_token"]
            return {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

        token = headers()["Authorization"].split(" ", 1)[1]
        checked = check_decisions(bench.port, token)
        say("checked: the read is allowed, the delete asks for an approval, the mix as expected")
        meter = base.CpuMeter(bench.server.pid if bench.server else 0)
        quiet = base._wait_quiet(args.wait_quiet, say) if args.wait_quiet else None
        load_avg = os.getloadavg()[0]
        phase = functools.partial(base.measure, bench, meter, wrk, say)
        hot, mix = json.dumps(HOT), [json.dumps(body) for _, body in MIX]
        path = "/v1/authorize"
        acknowledged, in_flight_cut = len(checked), 0
        phases: dict[str, base.Phase] = {}
        plan = [("warm-up", hot, args.warmup), ("authorize", hot, args.duration)]
        plan += [] if args.no_mix else [("mix", mix, args.duration)]
        for name, body, seconds in plan:
            if seconds > 0:
                profile = bool(args.profile) and name == "authorize"
                result = phase(name, path, "POST", headers(), body, seconds, profile=profile)
                acknowledged += result.ok
                in_flight_cut += result.in_flight_cut
                phases[name] = result
        health = phase("healthz", "/healthz", "GET", {}, "", args.duration)

        bench.kill_server()
        events = count_decisions(bench)
        verify = bench.valetkey("audit", "verify", "--tenant", bench.tenant, "--json")
        durable = acknowledged <= events["events"] <= acknowledged + in_flight_cut and bool(
            verify.get("ok")
        )
        say(f"in-process: {args.decisions} decisions per variant")
        decide = phases["authorize"]
        return {
            "config": {**base.run_config(bench, wrk, load_avg, quiet), "mix": not args.no_mix},
            "setup": {
                "actions": len(ACTIONS),
                "policies": POLICIES.count("@id("),
                "entities": len(directory_entities()),
                "hot_request": HOT,
            },
            "checks": checked,
            **{name: asdict(p) for name, p in phases.items() if name != "warm-up"},
            "warmup_errors": phases["warm-up"].errors if "warm-up" in phases else 0,
            "healthz": asdict(health),
            "ratio": round(decide.rps / health.rps, 3) if health.rps else None,
            "targets": {
                "decisions_per_s": TARGET_RPS,
                "p99_ms": TARGET_P99_MS,
                "met": decide.rps >= TARGET_RPS and decide.p99_ms <= TARGET_P99_MS,
            },
            "audit": {
                "acknowledged_decisions": acknowledged,
                "decision_made_events": events,
                "abandoned_in_flight_max": in_flight_cut,
                "chain_ok": bool(verify.get("ok")),
                "chain_events": verify.get("events"),
                "checked_after": "SIGKILL of the server (no graceful flush)",
                "durable": durable,
            },
            "in_process": in_process(args.decisions) if args.decisions else None,
        }
    finally:
        bench.cleanup()


def report(result: dict[str, Any]) -> str:
    cfg, audit = result["config"], result["audit"]
    phases = {n: result[n] for n in ("authorize", "mix", "healthz") if n in result}
    labels = {"authorize": "authorize (read)", "mix": "authorize (mix)", "healthz": "healthz"}
    lines = [
        f"ValetKey decisions (POST /v1/authorize): {cfg['database']}, {cfg['workers']} "
        f"worker(s), concurrency {cfg['concurrency']}, {cfg['duration_s']:g} s per phase, "
        f"generator {cfg['generator']}, {cfg['cpus']} CPUs (load {cfg['load_avg_1m_at_start']} "
        "at start)",
        f"tenant: {result['setup']['actions']} actions, {result['setup']['policies']} policies, "
        f"{result['setup']['entities']} stored entities",
        "",
        f"{'phase':<18}{'req/s':>8}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'errors':>8}"
        f"{'server ms CPU/req':>19}   cores used: {'server':>6}{'gen':>6}{'pg':>6}{'other':>6}",
    ]
    for name, p in phases.items():
        cpu = p["cpu"]
        lines.append(
            f"{labels[name]:<18}{p['rps']:>8.0f}{p['p50_ms']:>8.2f}{p['p90_ms']:>8.2f}"
            f"{p['p99_ms']:>8.2f}{p['errors']:>8}{p['server_cpu_ms_per_req']:>19.3f}{'':15}"
            f"{cpu['server']:>6.2f}{cpu['load_generator']:>6.2f}{cpu['postgres']:>6.2f}"
            f"{cpu['other']:>6.2f}"
        )
    lines.append("")
    lines.append(f"ratio decisions/healthz: {result['ratio']}")
    read, targets = result["authorize"], result["targets"]
    verdict = "MET" if targets["met"] else "NOT met"
    lines.append(
        f"targets (>= {targets['decisions_per_s']} decisions/s, p99 <= {targets['p99_ms']:g} ms): "
        f"{verdict} ({read['rps']:.0f}/s, p99 {read['p99_ms']:.2f} ms)"
    )
    if cfg["database"] == "postgresql":
        lines.append(
            "PostgreSQL CPU per request: "
            + ", ".join(f"{n} {p['postgres_cpu_ms_per_req']:.3f} ms" for n, p in phases.items())
        )
    if cfg["workers"] > 1:
        spread = ", ".join(f"{n} {p['connections_per_worker']}" for n, p in phases.items())
        lines.append(f"connections per worker: {spread}")
        shares = read["connections_per_worker"]
        if shares and min(shares) * 2 * len(shares) < cfg["concurrency"]:
            lines.append(
                "WARNING: the kernel gave the workers uneven shares of the read phase's "
                "connections (one listening socket); its figures understate the workers"
            )
    disturbed = max(p["cpu"]["other"] for p in phases.values())
    if disturbed > 0.2:
        lines.append(
            f"WARNING: {disturbed} cores went to other processes (shared machine), the figures "
            "are disturbed: run again when it is quiet (--wait-quiet 120)"
        )
    for name, p in phases.items():
        if p["errors"]:
            lines.append(f"{name} errors: {p['error_detail']}")
    if result["warmup_errors"]:
        lines.append(f"warm-up errors: {result['warmup_errors']}")
    events = audit["decision_made_events"]
    lines.append("")
    lines.append(
        f"audit (checked after {audit['checked_after']}): {events['events']} decision.made "
        f"events (allow {events['allow']}, deny {events['deny']}, approval_required "
        f"{events['approval_required']}) for {audit['acknowledged_decisions']} answers received"
        + (
            f" (+ up to {audit['abandoned_in_flight_max']} requests abandoned in flight by wrk)"
            if audit["abandoned_in_flight_max"]
            else ""
        )
        + f"; chain verified: {audit['chain_ok']} ({audit['chain_events']} events) -> "
        + ("DURABLE" if audit["durable"] else "FAILED")
    )
    rates = result["in_process"]
    if rates:
        lines.append("")
        lines.append(
            f"in process, one thread, {rates['n']} decisions each ({rates['entities_per_request']}"
            f" entities per request + {rates['action_entities']} action entities):"
        )
        for key in ("decision_point", "evaluate", "evaluate_default", "evaluate_with_stored"):
            r = rates[key]
            lines.append(
                f"  {r['decisions_per_s']:>8,}/s {r['us_per_decision']:>8.1f} µs  {r['label']}"
            )
    lines += base.profile_lines(result, "read")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    base.add_arguments(parser)
    parser.add_argument("--no-mix", action="store_true", help="skip the mixed-decision phase")
    parser.add_argument(
        "--decisions", type=int, default=20000, metavar="N", help="in-process decisions (0: none)"
    )
    args = parser.parse_args(argv)
    base.check_arguments(parser, args)
    if not 0 <= args.decisions <= 1_000_000:
        parser.error("--decisions: 0 to 1,000,000")
    result = run(args)
    if args.profile:
        layers = base.summarize_profile(args.profile, LAYERS)
        result["profile"] = {"dir": args.profile, "layers_pct": {k: round(v, 1) for k, v in layers}}
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else report(result))
    failed = any(result[n]["errors"] for n in ("authorize", "mix") if n in result)
    return 1 if failed or not result["audit"]["durable"] else 0


if __name__ == "__main__":
    sys.exit(main())
