"""The audit trail: every issuance, refusal and lifecycle change, under the agent's own name,
with the request's correlation id; never a secret or a token; tampering detected.

Tampering happens in a tenant of its own, directly in the database (SQLite with `sqlite3`,
PostgreSQL with asyncpg), is verified with `--tenant`, and is undone afterwards: the
session server is shared and other tests may verify every chain.
"""

import asyncio
import json
import re
import secrets
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from typing import Any

import asyncpg
import httpx
import jwt
import pytest

from tests.conftest import TenantSetup
from tests.integration.helpers import (
    access_token,
    audit_events,
    introspection,
    introspector_of,
    make_tenant,
    post,
    revoke,
    token_request,
)
from tests.support.server import RunningServer


@pytest.fixture(scope="module")
def shared(server: RunningServer) -> TenantSetup:
    """A tenant for the tests that change nothing another test relies on."""
    return make_tenant(server)


def cid() -> str:
    return "it-" + secrets.token_hex(8)


def by_correlation(server: RunningServer, correlation_id: str) -> list[dict[str, Any]]:
    return audit_events(server, "--correlation-id", correlation_id)


# issuance and refusal ---------------------------------------------------------------------
def test_token_issued_event(shared: TenantSetup) -> None:
    server, agent = shared.server, shared.agent
    correlation = cid()
    response = token_request(server, agent, shared.crm, headers={"X-Correlation-Id": correlation})
    assert response.status_code == 200
    assert response.headers["x-correlation-id"] == correlation
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})

    [event] = by_correlation(server, correlation)
    assert event["type"] == "token.issued"
    assert event["tenant"] == shared.tenant["id"]
    assert event["agent_id"] == agent["id"]
    assert event["jti"] == claims["jti"]
    assert event["outcome"] == "success"
    assert event["correlation_id"] == correlation
    assert event["data"]["grant_type"] == "client_credentials"
    assert event["data"]["aud"] == shared.crm
    assert event["data"]["scope"] == "deals:read"
    assert event["data"]["exp"] == claims["exp"]
    assert event["data"]["kid"] == jwt.get_unverified_header(response.json()["access_token"])["kid"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", event["time"])


def test_without_a_correlation_id_the_response_carries_a_new_one(shared: TenantSetup) -> None:
    server = shared.server
    first = token_request(server, shared.agent, shared.crm)
    second = token_request(server, shared.agent, shared.crm)
    ids = [first.headers["x-correlation-id"], second.headers["x-correlation-id"]]
    assert ids[0] != ids[1]
    for correlation, response in zip(ids, (first, second), strict=True):
        [event] = by_correlation(server, correlation)
        jti = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
        assert event["jti"] == jti["jti"]


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", "<script>"])
def test_malformed_correlation_id_is_replaced(shared: TenantSetup, bad: str) -> None:
    response = token_request(
        shared.server, shared.agent, shared.crm, headers={"X-Correlation-Id": bad}
    )
    assert response.status_code == 200
    assert response.headers["x-correlation-id"] != bad
    assert by_correlation(shared.server, response.headers["x-correlation-id"])


def test_correlation_id_is_echoed_on_errors_and_other_endpoints(shared: TenantSetup) -> None:
    server = shared.server
    for path in ("/oauth/token", "/oauth/introspect", "/oauth/revoke"):
        correlation = cid()
        response = post(server, path, {}, headers={"X-Correlation-Id": correlation})
        assert response.status_code in (400, 401)
        assert response.headers["x-correlation-id"] == correlation


def test_refusals_are_recorded_with_reason(shared: TenantSetup) -> None:
    server, agent = shared.server, shared.agent
    cases = {
        "invalid_scope": {"scope": "deals:admin"},
        "invalid_client": {"secret": "vk_cs_wrong"},
    }
    for error, kwargs in cases.items():
        correlation = cid()
        response = token_request(
            server, agent, shared.crm, headers={"X-Correlation-Id": correlation}, **kwargs
        )
        assert response.json()["error"] == error
        [event] = by_correlation(server, correlation)
        assert event["type"] == "token.refused"
        assert event["outcome"] == "failure"
        assert event["tenant"] == shared.tenant["id"]
        assert event["agent_id"] == agent["id"]
        assert event["reason"].startswith(error)
        assert event["jti"] is None
        assert event["data"]["error"] == error


def test_unknown_client_refusal_goes_to_the_system_chain(shared: TenantSetup) -> None:
    correlation = cid()
    response = post(
        shared.server,
        "/oauth/token",
        {"grant_type": "client_credentials", "client_id": "agt_ghost", "client_secret": "vk_cs_x"},
        headers={"X-Correlation-Id": correlation},
    )
    assert response.status_code == 401
    [event] = by_correlation(shared.server, correlation)
    assert event["type"] == "token.refused"
    assert event["tenant"] == "system"
    assert event["agent_id"] is None
    assert event["data"]["client_id"] == "agt_ghost"
    assert "vk_cs_x" not in json.dumps(event)


def test_lifecycle_events_are_recorded(tenant: TenantSetup) -> None:
    server, agent = tenant.server, tenant.agent
    rs = introspector_of(tenant)
    token = access_token(tenant)
    correlation = cid()
    assert revoke_with(server, agent, token, correlation).status_code == 200
    server.cli("agents", "rotate-secret", agent["id"])
    server.cli("agents", "suspend", agent["id"])
    server.cli("agents", "resume", agent["id"])
    server.cli("users", "create", "ops@acme.example", "--tenant", tenant.name)
    server.cli("users", "deactivate", "sam@acme.example", "--tenant", tenant.name)
    server.cli("agents", "set-sponsor", agent["id"], "ops@acme.example")
    server.cli("agents", "decommission", agent["id"])

    events = audit_events(server, "--tenant", tenant.name)
    types = [e["type"] for e in events]
    for expected in (
        "tenant.created",
        "user.created",
        "resource.created",
        "agent.created",
        "credential.created",
        "client.created",
        "token.issued",
        "token.revoked",
        "credential.rotated",
        "agent.suspended",
        "agent.resumed",
        "user.deactivated",
        "agent.flagged",
        "agent.sponsor_changed",
        "agent.decommissioned",
    ):
        assert expected in types, expected
    assert all(e["tenant"] == tenant.tenant["id"] for e in events)

    about_agent = {e["type"] for e in audit_events(server, "--agent", agent["id"])}
    assert {
        "agent.created",
        "credential.created",
        "token.issued",
        "token.revoked",
        "credential.rotated",
        "agent.suspended",
        "agent.resumed",
        "agent.flagged",
        "agent.sponsor_changed",
        "agent.decommissioned",
    } <= about_agent

    [revoked] = by_correlation(server, correlation)
    assert revoked["type"] == "token.revoked"
    assert revoked["jti"] == jwt.decode(token, options={"verify_signature": False})["jti"]
    [created] = audit_events(server, "--agent", agent["id"], "--type", "credential.created")
    assert created["data"]["kind"] == "client_secret"
    assert introspection(server, rs, token) == {"active": False}


def revoke_with(server: RunningServer, agent: dict[str, Any], token: str, correlation: str) -> Any:
    return post(
        server,
        "/oauth/revoke",
        {"token": token},
        auth=(agent["client_id"], agent["client_secret"]),
        headers={"X-Correlation-Id": correlation},
    )


def test_search_filters(tenant: TenantSetup) -> None:
    server = tenant.server
    access_token(tenant)
    token_request(server, tenant.agent, tenant.crm, scope="deals:admin")
    issued = audit_events(server, "--tenant", tenant.name, "--type", "token.issued")
    assert issued
    assert {e["type"] for e in issued} == {"token.issued"}
    refused = audit_events(server, "--tenant", tenant.name, "--type", "token.refused")
    assert [e["agent_id"] for e in refused] == [tenant.agent["id"]]
    assert audit_events(server, "--tenant", tenant.name, "--agent", "agt_nobody") == []
    limited = server.cli("audit", "search", "--tenant", tenant.name, "--limit", "2")
    assert len(limited) == 2
    # newest first
    everything = audit_events(server, "--tenant", tenant.name)
    assert [e["seq"] for e in everything] == sorted((e["seq"] for e in everything), reverse=True)


# nothing secret in the log ------------------------------------------------------------------
def test_no_secret_or_token_in_the_export(tenant: TenantSetup) -> None:
    server, agent = tenant.server, tenant.agent
    rs = introspector_of(tenant)
    tokens = [access_token(tenant) for _ in range(2)]
    rotated = server.cli("agents", "rotate-secret", agent["id"])["client_secret"]
    tokens.append(access_token(tenant, secret=rotated))
    wrong = "vk_cs_" + secrets.token_urlsafe(32)
    token_request(server, agent, tenant.crm, secret=wrong)
    post(
        server,
        "/oauth/token",
        {"grant_type": "client_credentials", "client_id": agent["id"], "client_secret": wrong},
    )
    introspection(server, rs, tokens[0])
    revoke(server, agent, tokens[1])
    secret_values = [agent["client_secret"], rotated, rs["client_secret"], wrong]

    result = server.cli_raw("audit", "export", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    export = result.stdout
    lines = export.splitlines()
    assert len(lines) > 20
    events = [json.loads(line) for line in lines]
    assert {e["type"] for e in events} >= {"token.issued", "token.revoked", "credential.rotated"}
    for event in events:
        assert set(event) >= {"id", "tenant", "seq", "type", "time", "correlation_id", "hash"}

    for value in secret_values:
        assert value not in export
    for token in tokens:
        assert token not in export
        assert token.split(".")[2] not in export  # not even the signature

    # this tenant's chain holds no secret, digest or JWT of anyone (the shared `system`
    # chain may hold whatever strangers sent as a client_id)
    own = server.cli_raw("audit", "export", "--format", "jsonl", "--tenant", tenant.name).stdout
    assert len(own.splitlines()) >= 10
    assert "vk_cs_" not in own
    assert "sha256$" not in own
    assert not re.search(r"eyJ[\w-]{10,}\.[\w-]{10,}\.", own)


# chain verification and tamper detection ----------------------------------------------------
def verify_chain(server: RunningServer, tenant: str) -> tuple[int, dict[str, Any], str]:
    result = server.cli_raw("audit", "verify", "--tenant", tenant, "--json")
    return result.exit_code, json.loads(result.stdout), result.output


def test_concurrent_requests_keep_one_unbroken_chain(tenant: TenantSetup) -> None:
    """Batched commits from concurrent requests still chain one event after another."""
    url = tenant.server.base_url + "/oauth/token"
    agent = tenant.agent

    def one(i: int) -> int:
        data = {"grant_type": "client_credentials", "resource": tenant.crm}
        if i % 4 == 0:
            data["scope"] = "deals:admin"  # a refusal in between
        auth = (agent["client_id"], agent["client_secret"])
        return httpx.post(url, data=data, auth=auth).status_code

    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(one, range(32)))
    assert codes.count(200) == 24
    assert codes.count(400) == 8
    events = audit_events(tenant.server, "--tenant", tenant.name)
    assert sorted(e["seq"] for e in events) == list(range(1, len(events) + 1))
    assert len([e for e in events if e["type"] == "token.issued"]) == 24
    assert len([e for e in events if e["type"] == "token.refused"]) == 8
    code, body, _ = verify_chain(tenant.server, tenant.name)
    assert (code, body) == (0, {"ok": True, "events": len(events)})


def test_verify_counts_the_tenants_events(shared: TenantSetup) -> None:
    access_token(shared)
    token_request(shared.server, shared.agent, shared.crm, scope="deals:admin")
    code, body, _ = verify_chain(shared.server, shared.name)
    assert code == 0
    count = len(audit_events(shared.server, "--tenant", shared.name))
    assert body == {"ok": True, "events": count}
    assert shared.server.cli("audit", "verify", "--tenant", shared.tenant["id"]) == body


class Database:
    """Direct SQL on the server's database, as an attacker with database access would."""

    def __init__(self, server: RunningServer) -> None:
        self.url = server.env["VALETKEY_DATABASE_URL"]

    def execute(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.url.startswith("sqlite"):
            path = self.url.split(":///", 1)[1]
            with closing(sqlite3.connect(path, timeout=10)) as conn, conn:
                return list(conn.execute(sql, params).fetchall())
        parts = sql.split("?")  # asyncpg numbers its placeholders
        pg_sql = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))

        async def go() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(self.url.replace("postgresql+asyncpg", "postgresql"))
            try:
                return [tuple(r) for r in await conn.fetch(pg_sql, *params)]
            finally:
                await conn.close()

        return asyncio.run(go())

    def row(self, tenant_id: str, seq: int) -> dict[str, Any]:
        columns = ["id", "type", "reason", "outcome", "agent_id", "prev_hash", "hash", "ts_us"]
        [row] = self.execute(
            f"SELECT {', '.join(columns)} FROM audit_events WHERE tenant_id = ? AND seq = ?",
            tenant_id,
            seq,
        )
        return dict(zip(columns, row, strict=True))

    def all_rows(self, tenant_id: str) -> list[tuple[Any, ...]]:
        return self.execute(
            "SELECT tenant_id, seq, id, type, ts_us, correlation_id, outcome, reason, agent_id,"
            " user_id, jti, CAST(data AS TEXT), prev_hash, hash FROM audit_events"
            " WHERE tenant_id = ? ORDER BY seq",
            tenant_id,
        )


@contextmanager
def restored_afterwards(db: Database, tenant_id: str) -> Iterator[None]:
    """Put the tenant's events back exactly as they were, so the shared log stays intact."""
    saved = db.all_rows(tenant_id)
    try:
        yield
    finally:
        db.execute("DELETE FROM audit_events WHERE tenant_id = ?", tenant_id)
        cast = "?" if db.url.startswith("sqlite") else "CAST(? AS JSON)"
        for row in saved:
            db.execute(
                "INSERT INTO audit_events (tenant_id, seq, id, type, ts_us, correlation_id,"
                " outcome, reason, agent_id, user_id, jti, data, prev_hash, hash)"
                f" VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {cast}, ?, ?)",
                *row,
            )


@pytest.fixture
def chained(tenant: TenantSetup) -> tuple[TenantSetup, Database, int]:
    """A tenant with some history: (tenant, its database, number of events)."""
    access_token(tenant)
    token_request(tenant.server, tenant.agent, tenant.crm, scope="deals:admin")
    tenant.server.cli("agents", "suspend", tenant.agent["id"])
    code, body, _ = verify_chain(tenant.server, tenant.name)
    assert (code, body["ok"]) == (0, True)
    return tenant, Database(tenant.server), int(body["events"])


def assert_broken_at(tenant: TenantSetup, seq: int) -> dict[str, Any]:
    code, body, _ = verify_chain(tenant.server, tenant.name)
    assert code == 1
    assert body["ok"] is False
    assert body["broken"]["seq"] == seq
    assert body["broken"]["tenant"] == tenant.tenant["id"]
    assert body["events"] == seq - 1  # the events before the break are intact
    human = tenant.server.cli_raw("audit", "verify", "--tenant", tenant.name)
    assert human.exit_code == 1
    assert f"seq {seq}" in human.output
    return dict(body["broken"])


def test_altered_event_is_detected(chained: tuple[TenantSetup, Database, int]) -> None:
    tenant, db, count = chained
    tid = tenant.tenant["id"]
    refused = next(
        e for e in audit_events(tenant.server, "--tenant", tenant.name)
        if e["type"] == "token.refused"
    )  # fmt: skip
    seq = refused["seq"]
    assert 1 < seq < count
    with restored_afterwards(db, tid):
        db.execute(
            "UPDATE audit_events SET outcome = 'success', reason = NULL"
            " WHERE tenant_id = ? AND seq = ?",
            tid,
            seq,
        )
        broken = assert_broken_at(tenant, seq)
        assert broken["id"] == refused["id"]
    assert verify_chain(tenant.server, tenant.name)[1] == {"ok": True, "events": count}


def test_altered_event_with_recomputed_hash_is_detected_at_the_next_link(
    chained: tuple[TenantSetup, Database, int],
) -> None:
    tenant, db, _count = chained
    tid = tenant.tenant["id"]
    seq = 2
    with restored_afterwards(db, tid):
        # an attacker who also recomputes the altered event's own hash
        db.execute(
            "UPDATE audit_events SET type = 'tenant.audited', hash = ?"
            " WHERE tenant_id = ? AND seq = ?",
            "f" * 64,
            tid,
            seq,
        )
        assert_broken_at(tenant, seq)
        original = db.row(tid, seq)
        db.execute(
            "UPDATE audit_events SET hash = ? WHERE tenant_id = ? AND seq = ?",
            _rehash(db, tid, seq),
            tid,
            seq,
        )
        assert db.row(tid, seq)["hash"] != original["hash"]
        assert_broken_at(tenant, seq + 1)


def _rehash(db: Database, tenant_id: str, seq: int) -> str:
    """The hash a forger would compute for the altered row (the chain's public algorithm)."""
    from valetkey.audit.chain import link_hash

    [row] = [r for r in db.all_rows(tenant_id) if r[1] == seq]
    fields = {
        "id": row[2],
        "tenant": row[0],
        "seq": row[1],
        "type": row[3],
        "ts_us": row[4],
        "correlation_id": row[5],
        "outcome": row[6],
        "reason": row[7],
        "agent_id": row[8],
        "user_id": row[9],
        "jti": row[10],
        "data": json.loads(row[11]),
    }
    return link_hash(row[12], fields)


def test_deleted_last_event_is_detected(chained: tuple[TenantSetup, Database, int]) -> None:
    tenant, db, count = chained
    tid = tenant.tenant["id"]
    with restored_afterwards(db, tid):
        db.execute("DELETE FROM audit_events WHERE tenant_id = ? AND seq = ?", tid, count)
        code, body, _ = verify_chain(tenant.server, tenant.name)
        assert code == 1
        assert body["ok"] is False
        assert body["broken"]["seq"] == count
        assert body["broken"]["tenant"] == tid
        assert body["events"] == count - 1
    assert verify_chain(tenant.server, tenant.name)[1] == {"ok": True, "events": count}


def test_deleted_middle_event_is_detected(chained: tuple[TenantSetup, Database, int]) -> None:
    tenant, db, _count = chained
    tid = tenant.tenant["id"]
    with restored_afterwards(db, tid):
        db.execute("DELETE FROM audit_events WHERE tenant_id = ? AND seq = ?", tid, 3)
        code, body, _ = verify_chain(tenant.server, tenant.name)
        assert code == 1
        assert body["events"] == 2
        # the walk stops at the first event after the gap and names the missing seq
        assert body["broken"]["seq"] == 4
        assert "expected seq 3" in body["broken"]["reason"]


def test_tampering_one_tenant_does_not_affect_another(
    chained: tuple[TenantSetup, Database, int], server: RunningServer
) -> None:
    tenant, db, _count = chained
    other = server.cli("tenants", "create", "t-" + secrets.token_hex(4))
    with restored_afterwards(db, tenant.tenant["id"]):
        db.execute(
            "UPDATE audit_events SET reason = 'x' WHERE tenant_id = ? AND seq = 1",
            tenant.tenant["id"],
        )
        assert verify_chain(server, other["name"])[:2] == (0, {"ok": True, "events": 1})
        assert verify_chain(server, tenant.name)[0] == 1
