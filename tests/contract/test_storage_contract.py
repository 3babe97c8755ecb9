"""One storage contract, every backend: the same assertions on SQLite and PostgreSQL."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.databases import BACKENDS, new_database_url
from valetkey.audit.events import AuditEvent, AuditQuery
from valetkey.audit.service import verify
from valetkey.clock import SystemClock
from valetkey.errors import Conflict, NotFound
from valetkey.identity.models import Client, Delegation, Resource, Tenant, User
from valetkey.oauth.keys import KeyManager
from valetkey.oauth.sessions import AuthorizationCode, CodeUse, RefreshRecord
from valetkey.policy.approvals import Approval, Approvals
from valetkey.storage.approval_store import SqlApprovalStore
from valetkey.storage.audit_store import SqlAuditStore
from valetkey.storage.database import Database
from valetkey.storage.delegation_store import SqlDelegationStore
from valetkey.storage.hot_path import SqliteHotPath, open_hot_path
from valetkey.storage.identity_store import SqlIdentityStore
from valetkey.storage.migrate import upgrade
from valetkey.storage.oauth_store import SqlOAuthStore
from valetkey.storage.session_store import SqlSessionStore
from valetkey.vault.cipher import Envelope, LocalKey, generate_master_key_text


@pytest.fixture(params=BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    url = await asyncio.to_thread(new_database_url, request.param, tmp_path)
    database = Database(url)
    await upgrade(database)
    yield database
    await database.dispose()


def _tenant(name: str = "acme") -> Tenant:
    return Tenant(f"ten_{name}", name, 1.0)


def _agent(tenant: Tenant, name: str = "bot", sponsor: str | None = None) -> Client:
    return Client(
        id=f"agt_{tenant.name}_{name}",
        tenant_id=tenant.id,
        kind="agent",
        name=name,
        status="active",
        scopes=("deals:read",),
        sponsor_id=sponsor,
        created_at=1.0,
        updated_at=1.0,
    )


async def test_tenants_users_and_conflicts(db: Database) -> None:
    store = SqlIdentityStore(db)
    tenant = await store.create_tenant(_tenant())
    assert (await store.find_tenant("acme")).id == tenant.id
    assert (await store.find_tenant(tenant.id)).name == "acme"
    event = AuditEvent("tenant.created", "ten_other", 1.0, "cor_x")
    with pytest.raises(Conflict):
        await store.create_tenant(replace(_tenant(), id="ten_other"), [event])
    assert await SqlAuditStore(db).count("ten_other") == 0  # the change failed: no event
    with pytest.raises(NotFound):
        await store.find_tenant("nobody")
    other = await store.create_tenant(_tenant("globex"))
    user = User("usr_1", tenant.id, "sam@acme.example", ("admin",), "active", 1.0)
    await store.create_user(user)
    with pytest.raises(Conflict):
        await store.create_user(replace(user, id="usr_2"))
    await store.create_user(replace(user, id="usr_3", tenant_id=other.id))  # other tenant: fine
    assert (await store.find_user(tenant.id, "sam@acme.example")).roles == ("admin",)
    with pytest.raises(NotFound):
        await store.find_user(other.id, "nobody@acme.example")


async def test_deactivation_flags_sponsored_agents_atomically(db: Database) -> None:
    store = SqlIdentityStore(db)
    tenant = await store.create_tenant(_tenant())
    user = await store.create_user(
        User("usr_1", tenant.id, "sam@acme.example", ("admin",), "active", 1.0)
    )
    await store.create_client(_agent(tenant, "a", user.id))
    await store.create_client(replace(_agent(tenant, "b", user.id), status="decommissioned"))
    deactivated, flagged = await store.deactivate_user(
        user, 2.0, lambda agents: [AuditEvent("agent.flagged", tenant.id, 2.0, "c") for _ in agents]
    )
    assert deactivated.status == "deactivated"
    assert (await verify(SqlAuditStore(db), [tenant.id])).events == 1  # committed with it
    assert [c.name for c in flagged] == ["a"]
    assert (await store.get_client(flagged[0].id)).needs_sponsor


async def test_clients_and_resources(db: Database) -> None:
    store = SqlIdentityStore(db)
    tenant = await store.create_tenant(_tenant())
    agent = await store.create_client(_agent(tenant))
    with pytest.raises(Conflict):
        await store.create_client(replace(agent, id="agt_dup"))
    stale = agent
    await store.save_client(
        replace(agent, status="suspended", revoked_before=5.0, updated_at=2.0), agent.updated_at
    )
    with pytest.raises(Conflict):  # a stale copy never undoes the suspension
        await store.save_client(replace(stale, status="active", updated_at=3.0), stale.updated_at)
    loaded = await store.get_client(agent.id)
    assert (loaded.status, loaded.revoked_before) == ("suspended", 5.0)
    with pytest.raises(NotFound):
        await store.get_client("agt_missing")
    version = (await store.find_tenant(tenant.id)).version
    resource = Resource("res_1", tenant.id, "https://crm.example", ("a:read",), {}, 1.0)
    await store.create_resource(resource)
    assert (await store.find_tenant(tenant.id)).version == version + 1
    with pytest.raises(Conflict):
        await store.create_resource(replace(resource, id="res_2"))


async def test_client_context_assertions_and_revocations(db: Database) -> None:
    identity = SqlIdentityStore(db)
    oauth = SqlOAuthStore(db)
    tenant = await identity.create_tenant(_tenant())
    agent = await identity.create_client(_agent(tenant))
    keys = KeyManager(
        oauth, Envelope(LocalKey.from_text(generate_master_key_text())), SystemClock()
    )
    active = await keys.ensure()
    ctx = await oauth.load_client_context(agent.id)
    assert ctx is not None
    assert (ctx.client.id, ctx.tenant.name, ctx.active_kid) == (agent.id, "acme", active.kid)
    assert await oauth.load_client_context("agt_missing") is None
    assert await oauth.consume_assertion("k1", 10.0)
    assert not await oauth.consume_assertion("k1", 10.0)
    assert not await oauth.is_revoked("jti1")
    assert await oauth.revoke_token("jti1", tenant.id, 9e9, 1.0)
    assert not await oauth.revoke_token("jti1", tenant.id, 9e9, 1.0)
    assert await oauth.is_revoked("jti1")


async def test_key_rotation_publishes_before_signing(db: Database) -> None:
    oauth = SqlOAuthStore(db)
    keys = KeyManager(
        oauth, Envelope(LocalKey.from_text(generate_master_key_text())), SystemClock()
    )
    first = await keys.ensure()
    assert await keys.ensure() == first  # idempotent
    published = {k["kid"] for k in (await keys.jwks())["keys"]}
    assert len(published) == 2
    promoted, retired = await keys.rotate(correlation_id="cor_rotate")
    assert retired is not None
    assert retired.kid == first.kid
    rotated = await SqlAuditStore(db).search(AuditQuery(correlation_id="cor_rotate"))
    assert [(e.type, e.data["kid"]) for e in rotated] == [("signing_key.rotated", promoted.kid)]
    assert promoted.kid in published  # the new signer was already public
    after = {k["kid"] for k in (await keys.jwks())["keys"]}
    assert {first.kid, promoted.kid} <= after and len(after) == 3
    assert all("d" not in k for k in (await keys.jwks())["keys"])
    kid, alg, _ = await keys.signer(None)
    assert (kid, alg) == (promoted.kid, "ES256")
    with pytest.raises(Conflict):
        await oauth.rotate(first.kid, [], [], 0.0)  # stale view of the active key
    ed, _ = await keys.rotate("EdDSA")
    assert ed.alg == "EdDSA"


async def test_audit_chain_stays_one_line_under_concurrent_nodes(db: Database) -> None:
    second = Database(db.url)  # another node: its own engine and pool
    try:
        stores = [SqlAuditStore(db), SqlAuditStore(second)]

        async def writer(i: int) -> None:
            for j in range(10):
                events = [
                    AuditEvent(
                        "token.issued", tenant, float(i * 100 + j), f"cor_{i}", jti=f"{i}-{j}"
                    )
                    for tenant in ("ten_a", "ten_b")
                ]
                await stores[i % 2].append(events)

        await asyncio.gather(*(writer(i) for i in range(8)))
        result = await verify(stores[0], ["ten_a", "ten_b"])
        assert result.ok, result.broken
        assert result.events == 160
        found = await stores[1].search(AuditQuery(tenant_id="ten_a", correlation_id="cor_3"))
        assert len(found) == 10
    finally:
        await second.dispose()


async def test_hot_path_reads_what_the_sql_store_reads(db: Database) -> None:
    identity = SqlIdentityStore(db)
    oauth = SqlOAuthStore(db)
    tenant = await identity.create_tenant(_tenant())
    agent = await identity.create_client(
        replace(_agent(tenant), jwks={"keys": [{"kty": "OKP"}]}, needs_sponsor=True)
    )
    await KeyManager(
        oauth, Envelope(LocalKey.from_text(generate_master_key_text())), SystemClock()
    ).ensure()
    hot = await open_hot_path(db.url, 1000)
    try:
        assert await hot.load_client_context(agent.id) == await oauth.load_client_context(agent.id)
        assert await hot.load_client_context("agt_missing") is None
    finally:
        await hot.close()


async def test_hot_path_and_sql_store_extend_one_chain(db: Database) -> None:
    hot = await open_hot_path(db.url, 10000)
    sql = SqlAuditStore(db)
    try:

        async def writer(i: int) -> None:
            store = hot if i % 2 else sql
            for j in range(10):
                await store.append(
                    [AuditEvent("token.issued", "ten_a", float(j), f"cor_{i}", data={"i": i})]
                )

        await asyncio.gather(*(writer(i) for i in range(6)))
        result = await verify(sql, ["ten_a"])
        assert result.ok, result.broken
        assert result.events == 60
    finally:
        await hot.close()


async def test_inline_sqlite_commits_from_several_processes_keep_one_chain(
    tmp_path: Path,
) -> None:
    url = new_database_url("sqlite", tmp_path)
    database = Database(url)
    await upgrade(database)
    # Two hot paths with their own connections and lock descriptors stand for two workers.
    paths = [SqliteHotPath(url.split("///", 1)[1], 10000, inline_commits=True) for _ in "ab"]
    try:

        async def writer(i: int) -> None:
            for j in range(15):
                event = AuditEvent("token.issued", "ten_a", float(j), f"cor_{i}", jti=f"{i}.{j}")
                await paths[i % 2].append([event])

        await asyncio.gather(*(writer(i) for i in range(6)))
        result = await verify(SqlAuditStore(database), ["ten_a"])
        assert result.ok, result.broken
        assert result.events == 90
    finally:
        for path in paths:
            await path.close()
        await database.dispose()


async def test_inline_commit_waits_for_this_processs_own_sql_writer(tmp_path: Path) -> None:
    """An aiosqlite transaction of this very process holds the write lock while the hot
    path commits inline: the commit must yield to the loop, not block it until timeout."""
    url = new_database_url("sqlite", tmp_path)
    database = Database(url)
    await upgrade(database)
    path = SqliteHotPath(url.split("///", 1)[1], 10000, inline_commits=True)
    try:
        async with database.write() as conn:
            await conn.execute(
                sa.text("INSERT INTO audit_heads VALUES ('ten_x', 0, :h)"), {"h": "0" * 64}
            )
            pending = asyncio.create_task(
                path.append([AuditEvent("token.issued", "ten_a", 1.0, "cor_1")])
            )
            await asyncio.sleep(0.05)
            assert not pending.done()  # waiting, and the loop still runs this coroutine
        await asyncio.wait_for(pending, 5)
        assert (await verify(SqlAuditStore(database), ["ten_a"])).events == 1
    finally:
        await path.close()
        await database.dispose()


async def test_verify_is_consistent_under_appends_and_sees_a_missing_head(db: Database) -> None:
    store = SqlAuditStore(db)

    async def appender() -> None:
        for i in range(40):
            await store.append([AuditEvent("token.issued", "ten_v", float(i), "cor_v")])

    task = asyncio.create_task(appender())
    while not task.done():
        result = await verify(store, ["ten_v"])
        assert result.ok, result.broken  # never a false alarm while the chain grows
        await asyncio.sleep(0)
    await task
    async with db.write() as conn:
        await conn.execute(sa.text("DELETE FROM audit_heads WHERE tenant_id = 'ten_v'"))
    assert "ten_v" in await store.chained_tenants()
    result = await verify(store, ["ten_v"])
    assert not result.ok
    assert result.broken is not None
    assert "head" in result.broken["reason"]


def _refresh(digest: str, family: str = "fam_1", jti: str = "0.a") -> RefreshRecord:
    return RefreshRecord(
        digest=digest, family_id=family, tenant_id="ten_acme", client_id="agt_acme_bot",
        user_id="usr_1", delegation_id="dlg_1", scopes=("deals:read",),
        resource="https://crm.example", generation="0", access_jti=jti, access_exp=9e9,
        created_at=1.0, expires_at=9e9,
    )  # fmt: skip


async def test_refresh_rotation_is_single_use_under_concurrency(db: Database) -> None:
    sessions = SqlSessionStore(db)
    assert await sessions.rotate_refresh(None, _refresh("d0"), 1.0)
    outcomes = await asyncio.gather(
        *(sessions.rotate_refresh("d0", _refresh(f"d1-{i}", jti=f"0.{i}"), 2.0) for i in range(50))
    )
    assert outcomes.count(True) == 1
    spent = await sessions.refresh_record("d0")
    assert spent is not None and spent.status == "used"
    winner = outcomes.index(True)
    assert (await sessions.refresh_record(f"d1-{winner}")) is not None
    assert await sessions.refresh_record(f"d1-{(winner + 1) % 50}") is None  # nothing half-done
    oauth = SqlOAuthStore(db)
    assert await sessions.revoke_family("fam_1", 3.0) == 1  # one token was still usable
    assert await oauth.is_revoked(f"0.{winner}") and await oauth.is_revoked("0.a")
    revoked = await sessions.refresh_record(f"d1-{winner}")
    assert revoked is not None and revoked.status == "revoked"
    assert await sessions.revoke_family("fam_1", 4.0) == 0  # idempotent


async def test_codes_are_spent_once_and_remember_their_family(db: Database) -> None:
    sessions = SqlSessionStore(db)
    code = AuthorizationCode(
        digest="c1", tenant_id="ten_acme", client_id="agt_acme_bot", user_id="usr_1",
        delegation_id=None, redirect_uri="https://app.example/cb", scopes=("deals:read",),
        resource=None, code_challenge="x" * 43, created_at=1.0, expires_at=61.0,
    )  # fmt: skip
    await sessions.save_code(code)
    uses = await asyncio.gather(
        *(sessions.use_code("c1", "agt_acme_bot", f"fam_{i}", 2.0) for i in range(20))
    )
    first = [u for u in uses if u.code is not None]
    assert len(first) == 1 and first[0].code == code
    family = f"fam_{uses.index(first[0])}"
    assert {u.reused_family for u in uses if u.code is None} == {family}
    assert (await sessions.use_code("nope", "agt_acme_bot", "fam_x", 2.0)) == CodeUse(None)
    assert (await sessions.use_code("c1", "agt_thief", "fam_y", 2.0)) == CodeUse(None)


async def test_hot_path_reads_delegations_like_sqlalchemy(db: Database) -> None:
    identity = SqlIdentityStore(db)
    tenant = await identity.create_tenant(_tenant())
    user = await identity.create_user(
        User("usr_1", tenant.id, "mia@acme.example", ("member",), "active", 1.0)
    )
    agent = await identity.create_client(_agent(tenant))
    plain = SqlDelegationStore(db)
    delegation = Delegation(
        "dlg_1", tenant.id, user.id, agent.id, ("deals:read",), ("https://crm.example",),
        "active", 1.0, mandate={"type": "mandate", "actions": ["read"], "locations": ["*"]},
        sub_agents=("agt_x",),
    )  # fmt: skip
    await plain.create_delegation(delegation)
    await plain.set_role_scopes(tenant.id, "member", ["deals:read"])
    hot = await open_hot_path(db.url, 1000)
    try:
        fast = plain.with_hot_path(hot)
        for store in (plain, fast):
            assert await store.delegation_by_id("dlg_1") == delegation
            assert await store.live_delegations(tenant.id, user.id, agent.id, 2.0) == [delegation]
            assert await store.user_by_email(tenant.id, "mia@acme.example") == user
            assert await store.user_by_id("usr_missing") is None
            assert await store.role_scopes(tenant.id) == {"member": ["deals:read"]}
    finally:
        await hot.close()


async def test_a_replayed_code_stops_a_session_still_being_started(db: Database) -> None:
    """The replay is seen before the first redemption stored its refresh token: that first
    token is refused, so the revocation cannot be outrun."""
    sessions = SqlSessionStore(db)
    code = AuthorizationCode(
        digest="c2", tenant_id="ten_acme", client_id="agt_acme_bot", user_id="usr_1",
        delegation_id=None, redirect_uri="https://app.example/cb", scopes=("deals:read",),
        resource=None, code_challenge="x" * 43, created_at=1.0, expires_at=61.0,
    )  # fmt: skip
    await sessions.save_code(code)
    first = await sessions.use_code("c2", "agt_acme_bot", "fam_first", 2.0)
    assert first.code is not None
    replay = await sessions.use_code("c2", "agt_acme_bot", "fam_other", 3.0)
    assert replay.reused_family == "fam_first"
    assert not await sessions.rotate_refresh(None, _refresh("d9", family="fam_first"), 4.0)
    assert await sessions.refresh_record("d9") is None
    assert await sessions.rotate_refresh(None, _refresh("d8", family="fam_unrelated"), 4.0)


class _Fixed:
    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at


async def test_overdue_approvals_expire_once_with_an_event(db: Database) -> None:
    identity = SqlIdentityStore(db)
    tenant = await identity.create_tenant(_tenant())
    store = SqlApprovalStore(db)
    clock = _Fixed(1000.0)
    approvals = Approvals(store, clock, ttl=60)
    approval = Approval("apr_1", tenant.id, "agt_x", None, None, "h" * 64, {"action": "read"},
                        "delete", "pending", 900.0, 960.0)  # fmt: skip
    await store.create_approval(approval, [])
    assert await approvals.expire_overdue() == 1
    expired = await store.get_approval("apr_1")
    assert expired is not None and expired.status == "expired"
    assert await approvals.expire_overdue() == 0
    events = await SqlAuditStore(db).search(AuditQuery(tenant_id=tenant.id, limit=10))
    assert [e.type for e in events] == ["approval.expired"]
