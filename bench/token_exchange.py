#!/usr/bin/env python3
"""Token exchange throughput: RFC 8693 on behalf of a user, next to `client_credentials`.

Starts its own ValetKey exactly as bench/token_issuance.py does (`valetkey serve`, 127.0.0.1
only, a temporary data dir, SQLite by default or `--database-url` for PostgreSQL) and sets
up, with the CLI, what an agent needs to act for a user: a stand-in company IdP (a P-256 key
generated here, its JWKS served on 127.0.0.1 from a thread of this script) trusted by the
tenant, a user, a resource, an agent with its sponsor, and the user's delegation of the
scope to the agent. The IdP signs one identity assertion (valid 30 minutes) that every
request presents as `subject_token`. One exchange is checked first (the token must say
`sub` = the user and `act.sub` = the agent); then, on the same server in the same run,
`POST /oauth/token` with `grant_type=client_credentials` and then with
`grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (`client_secret_basic`, same
agent, same resource and scope), each after a warm-up, at a fixed concurrency for a fixed
time. It prints requests/s, p50/p99 latency, errors and server CPU per request for both,
and the ratio exchange/client_credentials: what verifying the assertion (signature, issuer,
audience, expiry), finding the user and their live delegations and intersecting the scopes
cost on top of an ordinary token.

The load generators are token_issuance.py's (`wrk` when installed, else asyncio over raw
HTTP/1.1 keep-alive connections). Every phase is bounded in time and the script stops by
itself.

    .venv/bin/python bench/token_exchange.py                      # SQLite, 2 workers, 15 s
    .venv/bin/python bench/token_exchange.py --workers 1 --json
    .venv/bin/python bench/token_exchange.py --database-url "$VALETKEY_TEST_PG_URL"

`--database-url`, `--reuse-database`, `--generator`, `--profile DIR` (py-spy, exchange
phase), `--wait-quiet` and `--output FILE` behave as in token_issuance.py. The audit
durability check is token_issuance.py's business, not repeated here. The method (machine,
generators, CPU accounting) is the one docs/performance.md describes for token issuance.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

sys.path.insert(0, str(Path(__file__).parent))
import token_issuance as base

IDP_ISSUER = "https://idp.bench.example"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ASSERTION_LIFETIME = 30 * 60


class CompanyIdP:
    """A stand-in for the company's IdP: a P-256 key, its JWKS on 127.0.0.1 (a free port)."""

    kid = "bench-idp-1"

    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", private=True)
        public = {**self.key.as_dict(private=False), "kid": self.kid, "alg": "ES256"}
        document = json.dumps({"keys": [{**public, "use": "sig"}]}).encode()
        self.fetches = 0
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                idp.fetches += 1
                status, payload = (200, document) if self.path == "/jwks" else (404, b"{}")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((base.HOST, 0), Handler)
        self.jwks_uri = f"http://{base.HOST}:{self.server.server_address[1]}/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def assertion(self, email: str, audience: str, lifetime: int) -> str:
        now = int(time.time())
        claims = {"iss": IDP_ISSUER, "sub": email, "email": email, "aud": audience,
                  "iat": now, "exp": now + lifetime}  # fmt: skip
        return jwt.encode({"alg": "ES256", "kid": self.kid}, claims, self.key)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _payload(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return data


def set_up_delegation(bench: base.Bench, idp: CompanyIdP, client_id: str) -> dict[str, str]:
    """Trust the IdP, create the user and their delegation to the agent; ids for the check."""
    tenant = bench.tenant
    audience = bench.env["VALETKEY_ISSUER"]  # the assertions are meant for this ValetKey
    agent = bench.valetkey("agents", "show", client_id, "--tenant", tenant, "--json")
    email = f"user@{tenant}.example"
    trust = ["--jwks-uri", idp.jwks_uri, "--audience", audience, "--claim", "email"]
    bench.valetkey("issuers", "add", IDP_ISSUER, "--tenant", tenant, *trust, "--json")
    user = bench.valetkey("users", "create", email, "--tenant", tenant, "--json")
    grant = ["--agent", agent["id"], "--scope", base.SCOPE, "--resource", base.RESOURCE]
    bench.valetkey("delegations", "create", "--tenant", tenant, "--user", email, *grant, "--json")
    # The server fetches the IdP's keys from 127.0.0.1 itself: never through a proxy.
    for key in ("no_proxy", "NO_PROXY"):
        bench.env[key] = ",".join(filter(None, [bench.env.get(key), base.HOST]))
    return {"agent_id": agent["id"], "user_id": user["id"], "email": email, "aud": audience}


def check_exchange(
    port: int, headers: dict[str, str], body: str, ids: dict[str, str]
) -> dict[str, Any]:
    """One exchange before the load: a delegated token for the user, acted by the agent."""
    try:
        data = base._token_once(port, headers, body)
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"token exchange refused: HTTP {exc.code} {exc.read()!r}") from exc
    claims = _payload(data["access_token"])
    wanted = {
        "act": {"sub": ids["agent_id"]},
        "sub": ids["user_id"],
        "client_id": ids["agent_id"],
        "aud": base.RESOURCE,
        "scope": base.SCOPE,
    }
    wrong = {k: claims.get(k) for k, v in wanted.items() if claims.get(k) != v}
    if data.get("issued_token_type") != ACCESS_TOKEN_TYPE:
        wrong["issued_token_type"] = data.get("issued_token_type")
    if wrong:
        raise SystemExit(f"token exchange check FAILED: expected {wanted}, got {wrong}")
    return {**wanted, "expires_in": data.get("expires_in")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    wrk = base.find_wrk(args)
    say = (lambda *_: None) if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    bench = base.Bench(args)
    idp = CompanyIdP()
    try:
        bench.prepare_database()
        say(f"data dir {bench.tmp}; database {bench.database_url or 'SQLite (WAL)'}")
        client_id, client_secret = bench.create_identities()
        ids = set_up_delegation(bench, idp, client_id)
        bench.start_server()
        headers = base.client_headers(client_id, client_secret)
        lifetime = max(ASSERTION_LIFETIME, round(2 * (args.warmup + args.duration)) + 300)
        assertion = idp.assertion(ids["email"], ids["aud"], lifetime)
        bodies = {
            "client_credentials": {"grant_type": "client_credentials", "resource": base.RESOURCE},
            "token_exchange": {
                "grant_type": EXCHANGE,
                "subject_token": assertion,
                "subject_token_type": JWT_TYPE,
                "resource": base.RESOURCE,
                "scope": base.SCOPE,
            },
        }
        forms = {name: urllib.parse.urlencode(form) for name, form in bodies.items()}
        base._token_once(bench.port, headers, forms["client_credentials"])
        checked = check_exchange(bench.port, headers, forms["token_exchange"], ids)
        say(f"exchange checked: sub {checked['sub']}, act.sub {checked['act']['sub']}")
        meter = base.CpuMeter(bench.server.pid if bench.server else 0)
        quiet = base._wait_quiet(args.wait_quiet, say) if args.wait_quiet else None
        load_avg = os.getloadavg()[0]
        phase = functools.partial(base.measure, bench, meter, wrk, say)
        results: dict[str, base.Phase] = {}
        warm_errors: dict[str, int] = {}
        for name, form in forms.items():
            if args.warmup > 0:
                warm = phase(f"warmup-{name}", "/oauth/token", "POST", headers, form, args.warmup)
                warm_errors[name] = warm.errors
            profile = bool(args.profile) and name == "token_exchange"
            results[name] = phase(
                name, "/oauth/token", "POST", headers, form, args.duration, profile=profile
            )
        cc, exchange = results["client_credentials"], results["token_exchange"]
        return {
            "config": base.run_config(bench, wrk, load_avg, quiet),
            "client_credentials": asdict(cc),
            "token_exchange": asdict(exchange),
            "ratio": round(exchange.rps / cc.rps, 3) if cc.rps else None,
            "warmup_errors": warm_errors,
            "exchange_check": checked,
            "idp": {
                "issuer": IDP_ISSUER,
                "jwks_uri": idp.jwks_uri,
                "jwks_fetches": idp.fetches,
                "assertion_lifetime_s": lifetime,
            },
        }
    finally:
        bench.cleanup()
        idp.close()


def report(result: dict[str, Any]) -> str:
    cfg = result["config"]
    phases = {name: result[name] for name in ("client_credentials", "token_exchange")}
    lines = [
        f"ValetKey token exchange vs client_credentials: {cfg['database']}, {cfg['workers']} "
        f"worker(s), concurrency {cfg['concurrency']}, {cfg['duration_s']:g} s per grant, "
        f"generator {cfg['generator']}, {cfg['cpus']} CPUs (load {cfg['load_avg_1m_at_start']} "
        "at start)",
        "",
        f"{'grant':<19}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>8}"
        f"{'server ms CPU/req':>19}   cores used: {'server':>6}{'gen':>6}{'pg':>6}{'other':>6}",
    ]
    for name, p in phases.items():
        cpu = p["cpu"]
        lines.append(
            f"{name:<19}{p['rps']:>8.0f}{p['p50_ms']:>8.2f}{p['p99_ms']:>8.2f}{p['errors']:>8}"
            f"{p['server_cpu_ms_per_req']:>19.3f}{'':15}{cpu['server']:>6.2f}"
            f"{cpu['load_generator']:>6.2f}{cpu['postgres']:>6.2f}{cpu['other']:>6.2f}"
        )
    lines.append("")
    lines.append(f"ratio token_exchange/client_credentials: {result['ratio']}")
    if cfg["database"] == "postgresql":
        lines.append(
            "PostgreSQL CPU per request: "
            + ", ".join(f"{n} {p['postgres_cpu_ms_per_req']:.3f} ms" for n, p in phases.items())
        )
    checked, idp = result["exchange_check"], result["idp"]
    lines.append(
        f"checked before the load: the exchanged token has sub {checked['sub']} (the user), "
        f"act.sub {checked['act']['sub']} (the agent), aud {checked['aud']}, scope "
        f"{checked['scope']}, expires_in {checked['expires_in']}; the server fetched the IdP's "
        f"JWKS {idp['jwks_fetches']} time(s)"
    )
    if cfg["workers"] > 1:
        spread = ", ".join(f"{n} {p['connections_per_worker']}" for n, p in phases.items())
        lines.append(f"connections per worker: {spread}")
    disturbed = max(p["cpu"]["other"] for p in phases.values())
    if disturbed > 0.2:
        lines.append(
            f"WARNING: {disturbed} cores went to other processes (shared machine), the figures "
            "are disturbed: run again when it is quiet (--wait-quiet 120)"
        )
    for name, p in phases.items():
        if p["errors"] or result["warmup_errors"].get(name):
            lines.append(
                f"{name} errors: {p['error_detail']} "
                f"(warm-up: {result['warmup_errors'].get(name, 0)})"
            )
    lines += base.profile_lines(result, "exchange")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    base.add_arguments(parser)
    args = parser.parse_args(argv)
    base.check_arguments(parser, args)
    result = run(args)
    if args.profile:
        layers = base.summarize_profile(args.profile)
        result["profile"] = {"dir": args.profile, "layers_pct": {k: round(v, 1) for k, v in layers}}
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else report(result))
    failed = result["client_credentials"]["errors"] or result["token_exchange"]["errors"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
