"""`authorize()` against a live ValetKey: allowed intents return the decision, denials
raise `Denied` / `RateLimited`, destructive ones raise `ApprovalRequired`, whose `wait()`
long-polls while a human decides from another thread; and DPoP end to end (token with the
nonce dance, then `/v1/authorize` with a proof bound to it)."""

import asyncio
import threading
import time
from collections.abc import Callable

import jwt
import pytest

from tests.conftest import TenantSetup
from tests.sdk.conftest import APPROVER, World, add_actions
from valetkey.sdk import (
    AgentClient,
    ApprovalRequired,
    ApprovalTimeout,
    Denied,
    Intent,
    InvalidToken,
    OAuthError,
    RateLimited,
    TokenVerifier,
)

DELETE = Intent("crm:deals.delete", "crm:deals/7",
                context={"user_request": "remove the duplicate Acme deal"})  # fmt: skip


def later(delay: float, action: Callable[[], object]) -> threading.Thread:
    """Run `action` on another thread after `delay` seconds (a human, deciding)."""

    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_allowed_intents_return_the_decision(world: World) -> None:
    client = world.client(world.agent())
    decision = client.authorize({"action": "crm:deals.read", "resource": "crm:deals/1"})
    assert decision.allowed and decision.id.startswith("dec_")
    assert decision.policies == ("allow-read-write",)


def test_denials_raise_with_their_reasons(world: World) -> None:
    client = world.client(world.agent())
    with pytest.raises(Denied) as denied:
        client.authorize(Intent("crm:deals.nuke", "crm:deals/1"))
    assert denied.value.code == "unknown_action"
    assert denied.value.decision.decision == "deny"
    reader = world.client(world.agent("deals:read"))
    with pytest.raises(Denied) as narrow:
        reader.authorize(DELETE)
    assert narrow.value.code == "insufficient_scope"


def test_an_approval_is_waited_for_then_used_once(world: World) -> None:
    client = world.client(world.agent())
    with pytest.raises(ApprovalRequired) as required:
        client.authorize(DELETE)
    err = required.value
    assert err.approval.pending and err.approval_id.startswith("apr_")
    assert err.intent == DELETE and err.decision is not None
    decider = later(0.5, lambda: world.server.cli("approvals", "approve", err.approval_id,
                                                  "--by", APPROVER))  # fmt: skip
    started = time.monotonic()
    approval = err.wait(timeout=30)
    decider.join()
    assert approval.approved and approval.id == err.approval_id
    assert time.monotonic() - started < 10  # the long poll ended with the decision
    decision = client.authorize(err.intent, approval_id=err.approval_id)
    assert decision.allowed
    with pytest.raises(Denied) as replayed:
        client.authorize(err.intent, approval_id=err.approval_id)
    assert replayed.value.code == "approval_used"


async def test_async_wait_and_a_denied_approval(world: World) -> None:
    agent = await asyncio.to_thread(world.agent)
    async with world.async_client(agent) as client:
        with pytest.raises(ApprovalRequired) as required:
            await client.authorize(DELETE)
        err = required.value
        with pytest.raises(TypeError):
            err.wait()  # an async client's approval is awaited
        decider = later(0.3, lambda: world.server.cli("approvals", "deny", err.approval_id,
                                                      "--by", APPROVER))  # fmt: skip
        approval = await err.wait_async(timeout=30)
        decider.join()
        assert approval.status == "denied"
        with pytest.raises(Denied) as denied:
            await client.authorize(DELETE, approval_id=err.approval_id)
        assert denied.value.code == "approval_denied"


def test_waiting_ends_with_approval_timeout(world: World) -> None:
    client = world.client(world.agent())
    with pytest.raises(ApprovalRequired) as required:
        client.authorize(Intent("crm:deals.delete", "crm:deals/8"))
    started = time.monotonic()
    with pytest.raises(ApprovalTimeout) as timed_out:
        required.value.wait(timeout=1)
    assert 0.9 < time.monotonic() - started < 5
    assert timed_out.value.approval.pending


def test_a_used_up_limit_raises_rate_limited(world: World) -> None:
    agent = world.agent()
    world.server.cli("limits", "set", "--tenant", world.name, "--agent", agent["id"],
                     "--class", "read", "--max", "1", "--per", "minute")  # fmt: skip
    client = world.client(agent)
    client.token()
    if time.time() % 60 > 55:  # the limit's window is the clock's minute: both calls in one
        time.sleep(60.5 - time.time() % 60)
    assert client.authorize(Intent("crm:deals.read", "crm:deals/1")).allowed
    with pytest.raises(RateLimited) as limited:
        client.authorize(Intent("crm:deals.read", "crm:deals/2"))
    assert isinstance(limited.value, Denied) and limited.value.code == "rate_limited"
    assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 60


@pytest.fixture
def dpop_tenant(tenant: TenantSetup) -> TenantSetup:
    tenant.server.cli("tenants", "set", tenant.name, "--require-dpop")
    add_actions(tenant)
    tenant.agent = tenant.new_agent("dpop-bot", "deals:read", "deals:write")
    return tenant


def test_dpop_end_to_end(dpop_tenant: TenantSetup) -> None:
    tenant, server = dpop_tenant, dpop_tenant.server
    agent = tenant.agent
    with AgentClient(server.issuer, agent["client_id"], agent["client_secret"],
                     resource=tenant.crm, dpop=True) as client:  # fmt: skip
        token = client.token()  # answered use_dpop_nonce first, then retried with the nonce
        assert token.token_type == "DPoP" and token.is_dpop
        with pytest.raises(InvalidToken, match="DPoP"):  # a bound token alone is not enough
            TokenVerifier(server.issuer, tenant.crm).verify(token.value)
        decision = client.authorize(Intent("crm:deals.read", "crm:deals/1"))
        assert decision.allowed
        with pytest.raises(ApprovalRequired) as required:
            client.authorize(Intent("crm:deals.delete", "crm:deals/1"))
        server.cli("approvals", "approve", required.value.approval_id, "--by", APPROVER)
        assert required.value.wait(timeout=10).approved  # the long poll with a proof too
        jkt = client.jkt
    events = server.cli("audit", "search", "--tenant", tenant.name, "--type", "token.issued")
    mine = [e for e in events if e["agent_id"] == agent["id"]]
    assert len(mine) == 1  # the nonce round trip issued nothing
    claims = jwt.decode(token.value, options={"verify_signature": False})
    assert claims["cnf"] == {"jkt": jkt}
    bearer = AgentClient(server.issuer, agent["client_id"], agent["client_secret"],
                         resource=tenant.crm)  # fmt: skip
    with bearer, pytest.raises(OAuthError) as refused:
        bearer.token()
    assert refused.value.error == "invalid_dpop_proof"  # the tenant requires DPoP
