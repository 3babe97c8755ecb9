"""The agent's own tokens through the SDK, against a live ValetKey: caching per (resource,
scope), one token request however many callers, refresh in the background before expiry,
one renewal after a 401, client authentication (secret, secret file, private_key_jwt) and
correlation ids on the audit trail. Tokens are counted by their `token.issued` events."""

import asyncio
import concurrent.futures
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TenantSetup
from tests.integration.helpers import KeyPair, revoke
from tests.sdk.conftest import World
from valetkey.sdk import (
    AgentClient,
    AsyncAgentClient,
    OAuthError,
    SDKError,
    TokenVerifier,
    correlation_id,
)

READ = {"action": "crm:deals.read", "resource": "crm:deals/1"}


def test_tokens_are_cached_per_resource_and_scope(world: World) -> None:
    agent = world.agent()
    client = world.client(agent)
    first = client.token()
    assert client.token() is first
    narrow = client.token(scope="deals:read")
    assert narrow.value != first.value and narrow.scopes == ("deals:read",)
    assert set(first.scopes) == {"deals:read", "deals:write"}
    assert first.token_type == "Bearer" and first.resource == world.crm
    assert 800 < first.expires_at - time.time() <= 900
    assert world.issued(agent) == 2
    claims = TokenVerifier(world.issuer, world.crm).verify(first.value)
    assert claims.sub == claims.client_id == agent["id"]
    assert first.value not in repr(first) and "value" not in repr(first)


def test_fifty_threads_share_one_token_request(world: World) -> None:
    agent = world.agent()
    client = world.client(agent)
    start = threading.Barrier(50)

    def call(_: int) -> str:
        start.wait()
        return client.token().value

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        values = set(pool.map(call, range(50)))
    assert len(values) == 1
    assert world.issued(agent) == 1


async def test_fifty_tasks_share_one_token_request(world: World) -> None:
    # The CLI runs its own event loop: async tests call it from a thread.
    agent = await asyncio.to_thread(world.agent)
    async with world.async_client(agent) as client:
        tokens = await asyncio.gather(*(client.token() for _ in range(50)))
    assert len({t.value for t in tokens}) == 1
    assert await asyncio.to_thread(world.issued, agent) == 1


@pytest.fixture
def short_lived(tenant: TenantSetup) -> TenantSetup:
    """A tenant whose tokens live 30 s (the shortest ValetKey allows)."""
    tenant.server.cli("tenants", "set", tenant.name, "--token-lifetime", "30s")
    return tenant


def _refreshed(get: Any, old: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        token = get()
        if token.value != old:
            return token
        time.sleep(0.05)
    raise AssertionError("the token was not refreshed in the background")


def test_refreshed_in_the_background_before_expiry(short_lived: TenantSetup) -> None:
    """Past `refresh_ratio` of its life the cached token is still served at once while one
    background request (for 50 concurrent callers) fetches the next, well before expiry."""
    tenant, server = short_lived, short_lived.server
    agent = tenant.agent
    with AgentClient(server.issuer, agent["client_id"], agent["client_secret"],
                     resource=tenant.crm, refresh_ratio=0.05) as client:  # fmt: skip
        first = client.token()
        assert 25 < first.expires_at - time.time() <= 30
        time.sleep(1.6)  # past 5% of 30 s: in the refresh window, far from expiry

        def call(_: int) -> tuple[str, float]:
            started = time.monotonic()
            return client.token().value, time.monotonic() - started

        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(call, range(50)))
        served = {value for value, _ in answers}
        assert first.value in served  # nobody waited for the refresh ...
        assert max(elapsed for _, elapsed in answers) < 0.5
        second = _refreshed(client.token, first.value)
        assert second.expires_at > first.expires_at
        assert time.time() < first.expires_at - 20  # ... and it happened long before expiry
    events = [e for e in server.cli("audit", "search", "--tenant", tenant.name, "--type",
                                    "token.issued", "--limit", "100")
              if e["agent_id"] == agent["id"]]  # fmt: skip
    assert len(events) == 2  # one refresh for the 50 callers


async def test_async_refresh_in_the_background(short_lived: TenantSetup) -> None:
    tenant, server = short_lived, short_lived.server
    agent = tenant.agent
    async with AsyncAgentClient(server.issuer, agent["client_id"], agent["client_secret"],
                                resource=tenant.crm, refresh_ratio=0.05) as client:  # fmt: skip
        first = await client.token()
        await asyncio.sleep(1.6)
        stale = await asyncio.gather(*(client.token() for _ in range(50)))
        assert {t.value for t in stale} == {first.value}
        deadline = time.monotonic() + 10
        while (second := await client.token()).value == first.value:
            assert time.monotonic() < deadline, "no background refresh"
            await asyncio.sleep(0.05)
        assert second.expires_at > first.expires_at
    issued = await asyncio.to_thread(
        server.cli, "audit", "search", "--tenant", tenant.name, "--type", "token.issued"
    )
    assert len([e for e in issued if e["agent_id"] == agent["id"]]) == 2


def test_a_revoked_token_is_replaced_once_for_all_callers(world: World) -> None:
    agent = world.agent()
    client = world.client(agent)
    old = client.token()
    assert revoke(world.server, agent, old.value).status_code == 200
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        decisions = list(pool.map(lambda _: client.authorize(READ), range(20)))
    assert all(d.allowed for d in decisions)
    assert client.token().value != old.value
    assert world.issued(agent) == 2  # the 401s of 20 requests: one new token


def test_refusals_raise_oauth_errors_without_secrets(world: World) -> None:
    agent = world.agent("deals:read")
    wrong = AgentClient(world.issuer, agent["client_id"], "vk_cs_wrong-secret")
    with wrong, pytest.raises(OAuthError) as refused:
        wrong.token()
    assert refused.value.error == "invalid_client" and refused.value.status_code == 401
    assert "vk_cs_wrong-secret" not in str(refused.value)
    with pytest.raises(OAuthError) as escalated:
        world.client(agent).token(scope="deals:admin")
    assert escalated.value.error == "invalid_scope"


def test_private_key_jwt_and_secret_files_from_the_environment(
    world: World, tmp_path: Path
) -> None:
    key = KeyPair.generate()
    public = tmp_path / "agent.pub.pem"
    public.write_bytes(key.public_pem)
    keyed = world.agent("deals:read", extra=("--public-key", str(public)))
    private = tmp_path / "agent.key.pem"
    private.write_bytes(key.private_pem)
    env = {"VALETKEY_ISSUER": world.issuer, "VALETKEY_CLIENT_ID": keyed["client_id"],
           "VALETKEY_PRIVATE_KEY_FILE": str(private), "VALETKEY_RESOURCE": world.crm}  # fmt: skip
    with AgentClient.from_env(env) as client:
        first = client.token()
        second = client.token(scope="deals:read")  # a second assertion: a new jti
        assert first.value != second.value
    assert world.issued(keyed) == 2

    agent = world.agent("deals:read")
    secret_file = tmp_path / "secret"
    secret_file.write_text(agent["client_secret"] + "\n")
    env = {"VALETKEY_ISSUER": world.issuer, "VALETKEY_CLIENT_ID": agent["client_id"],
           "VALETKEY_CLIENT_SECRET_FILE": str(secret_file),
           "VALETKEY_SCOPE": "deals:read"}  # fmt: skip
    with AgentClient.from_env(env) as client:
        assert client.token().scopes == ("deals:read",)

    with pytest.raises(SDKError, match="exactly one"):
        AgentClient.from_env({**env, "VALETKEY_CLIENT_SECRET": "also"})
    with pytest.raises(SDKError, match="VALETKEY_ISSUER"):
        AgentClient.from_env({"VALETKEY_CLIENT_SECRET": "s", "VALETKEY_CLIENT_ID": "c"})


def test_correlation_ids_reach_the_audit_log(world: World) -> None:
    agent = world.agent()
    client = world.client(agent)
    reset = correlation_id.set("ticket-4711")
    try:
        client.token()
        client.authorize(READ)
    finally:
        correlation_id.reset(reset)
    (issued,) = world.events("token.issued", agent)
    (decided,) = world.events("decision.made", agent)
    assert issued["correlation_id"] == decided["correlation_id"] == "ticket-4711"
    client.authorize(READ)  # unset: this call mints its own
    newest = world.events("decision.made", agent)[0]["correlation_id"]
    assert newest.startswith("cor_") and newest != "ticket-4711"
