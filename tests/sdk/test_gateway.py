"""`gateway(provider)`: an httpx client for `/v1/gateway/{provider}` against a live ValetKey
and the stand-in platform (tests/support/platform.py), which records what reached it:
the platform's own token, `X-Agent-Id` and the agent's correlation id — never the agent's
token. ValetKey's refusals raise; the platform's answers stay responses."""

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.sdk.conftest import APPROVER, PLATFORM_SECRET, World, add_provider, connect
from tests.support.platform import Platform, running_platform
from valetkey.sdk import (
    AgentClient,
    ApprovalRequired,
    Denied,
    GatewayError,
    SDKError,
    correlation_id,
)

GATEWAY_SCOPES = ("crm:read", "crm:write", "crm:delete")


@pytest.fixture(scope="module")
def platform(world: World) -> Iterator[Platform]:
    """The platform, registered as the provider `crm` of the module's tenant."""
    with running_platform(client_secret=PLATFORM_SECRET) as running:
        add_provider(world.server, world.name, running)
        yield running


def connected_agent(world: World, platform: Platform, *scopes: str) -> dict[str, Any]:
    """An agent allowed to use the gateway, with its own platform connection (imported)."""
    agent = world.agent(*(scopes or GATEWAY_SCOPES))
    connect(world.server, world.name, platform, agent)
    return agent


def client_for(world: World, agent: dict[str, Any], **options: Any) -> AgentClient:
    return world.client(agent, resource=None, **options)


def test_the_correlation_id_reaches_the_platform(world: World, platform: Platform) -> None:
    agent = connected_agent(world, platform)
    client = client_for(world, agent)
    reset = correlation_id.set("ticket-4711")
    try:
        with client.gateway("crm") as crm:
            response = crm.get("/deals/42")
    finally:
        correlation_id.reset(reset)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "42"
    seen = platform.api_calls[-1]
    assert seen.headers["x-correlation-id"] == "ticket-4711"
    assert seen.headers["x-agent-id"] == agent["id"]
    assert seen.headers["authorization"].startswith("Bearer plat_at_")
    token = client.token(resource=f"{world.issuer}/v1/gateway/crm")
    assert token.value not in str(seen.headers)
    with client.gateway("crm") as crm:  # unset: a new id per call, the same end to end
        echoed = crm.get("/echo")
    minted = echoed.headers["x-correlation-id"]
    assert minted.startswith("cor_")
    assert platform.api_calls[-1].headers["x-correlation-id"] == minted
    (called,) = [e for e in world.events("gateway.called", agent)
                 if e["correlation_id"] == "ticket-4711"]  # fmt: skip
    assert called["data"]["status"] == 200


def test_approval_required_then_retried_with_the_approval(world: World, platform: Platform) -> None:
    agent = connected_agent(world, platform)
    with client_for(world, agent).gateway("crm") as crm:
        before = len(platform.api_calls)
        with pytest.raises(ApprovalRequired) as required:
            crm.delete("/deals/7")
        assert len(platform.api_calls) == before  # nothing reached the platform
        err = required.value
        assert err.intent is None and err.decision is not None
        world.server.cli("approvals", "approve", err.approval_id, "--by", APPROVER)
        assert err.wait(timeout=10).approved
        done = crm.delete("/deals/7", headers=err.retry_headers)
        assert done.status_code == 204
        assert platform.api_calls[-1].method == "DELETE"
        with pytest.raises(Denied) as replayed:
            crm.delete("/deals/7", headers=err.retry_headers)
        assert replayed.value.code == "approval_used"


def test_platform_answers_are_responses_and_valetkey_refusals_raise(
    world: World, platform: Platform
) -> None:
    agent = connected_agent(world, platform, "crm:read")
    client = client_for(world, agent)
    with client.gateway("crm") as crm:
        assert crm.get("/nowhere").status_code == 404  # the platform's own 404
        with pytest.raises(GatewayError) as scope:
            crm.patch("/deals/1", json={"stage": "won"})
        platform.quirks.api_status = 401  # the platform refuses its own token, twice
        try:
            refused = crm.get("/deals/1")
        finally:
            platform.quirks.api_status = None
    assert scope.value.status == 403 and scope.value.code == "insufficient_scope"
    assert refused.status_code == 401 and "www-authenticate" not in refused.headers
    assert world.issued(agent) == 1  # the platform's 401 is not a reason for a new token
    stranger = client_for(world, world.agent(*GATEWAY_SCOPES))  # no connection of its own
    with stranger.gateway("crm") as crm, pytest.raises(GatewayError) as missing:
        crm.get("/deals/1")
    assert missing.value.status == 409 and missing.value.code == "connection_required"
    with pytest.raises(ValueError, match="provider"):
        client.gateway("../oauth")
    before = len(platform.api_calls)
    with client.gateway("crm") as crm:  # a path a model chose cannot take the token away
        for escape in (f"{platform.api_base}/deals/1", "/../../oauth/introspect"):
            with pytest.raises(SDKError, match="refusing to send"):
                crm.get(escape)
    assert len(platform.api_calls) == before


def test_dpop_through_the_gateway(world: World, platform: Platform) -> None:
    agent = connected_agent(world, platform)
    client = client_for(world, agent, dpop=True)
    with client.gateway("crm") as crm:
        response = crm.get("/deals/9", params={"fields": "name"})  # htu without the query
    assert response.status_code == 200, response.text
    seen = platform.api_calls[-1]
    assert "dpop" not in seen.headers and seen.path == "/api/deals/9?fields=name"


async def test_async_gateway(world: World, platform: Platform) -> None:
    agent = await asyncio.to_thread(connected_agent, world, platform)
    async with world.async_client(agent, resource=None) as client:
        async with client.gateway("crm") as crm:
            responses = await asyncio.gather(*(crm.get(f"/deals/{n}") for n in range(10)))
        assert [r.status_code for r in responses] == [200] * 10
        async with client.gateway("crm") as crm:
            with pytest.raises(ApprovalRequired) as required:
                await crm.delete("/deals/3")
    assert required.value.approval.pending
