"""The examples run as written: `examples/agent_sdk.py` as a script against the live
ValetKey and the stand-in CRM, `examples/resource_server.py` served by uvicorn, called with
tokens from the live ValetKey (Bearer and DPoP)."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.sdk.conftest import (
    EXAMPLES,
    PLATFORM_SECRET,
    World,
    add_provider,
    connect,
    load_example,
    serving,
)
from tests.support.platform import Platform, running_platform
from valetkey.sdk import AgentClient


@pytest.fixture
def platform(world: World) -> Iterator[Platform]:
    with running_platform(client_secret=PLATFORM_SECRET) as running:
        add_provider(world.server, world.name, running)
        yield running


def test_the_agent_example_runs_as_a_script(
    world: World, platform: Platform, tmp_path: Path
) -> None:
    agent = world.agent("crm:read")
    connect(world.server, world.name, platform, agent)
    secret = tmp_path / "secret"
    secret.write_text(agent["client_secret"] + "\n")
    env = {**os.environ, "VALETKEY_ISSUER": world.issuer, "VALETKEY_CLIENT_ID": agent["id"],
           "VALETKEY_CLIENT_SECRET_FILE": str(secret)}  # fmt: skip
    for name in ("VALETKEY_CLIENT_SECRET", "VALETKEY_PRIVATE_KEY_FILE", "VALETKEY_RESOURCE"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, str(EXAMPLES / "agent_sdk.py"), "42"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "deal 42: Acme renewal, negotiation, 120000"
    seen = platform.api_calls[-1]
    assert seen.path == "/api/deals/42" and seen.headers["x-agent-id"] == agent["id"]
    assert seen.headers["x-correlation-id"] == "example-deal-42"
    decided = world.events("decision.made", agent)  # the intent, then the gateway call's
    assert [e["correlation_id"] for e in decided] == ["example-deal-42"] * 2

    stranger = world.agent("crm:read")  # no connection: ValetKey refuses, the script says so
    env["VALETKEY_CLIENT_ID"] = stranger["id"]
    secret.write_text(stranger["client_secret"])
    failed = subprocess.run([sys.executable, str(EXAMPLES / "agent_sdk.py"), "42"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert failed.returncode != 0 and "connection_required" in failed.stderr


def test_the_resource_server_example(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VALETKEY_ISSUER", world.issuer)
    monkeypatch.setenv("RESOURCE_AUDIENCE", world.crm)
    example = load_example("resource_server")
    reader, writer = world.agent("deals:read"), world.agent()
    with serving(example.app) as base, httpx.Client(base_url=base) as http:
        assert http.get("/deals/42").status_code == 401
        with world.client(reader) as agent:
            deal = http.get("/deals/42", auth=agent.auth)
            assert deal.status_code == 200, deal.text
            assert deal.json()["read_by"] == reader["id"] and deal.json()["on_behalf_of"] is None
            refused = http.patch("/deals/42", json={"stage": "won"}, auth=agent.auth)
            assert refused.status_code == 403
        with world.client(writer, dpop=True) as agent:
            changed = http.patch("/deals/42", json={"stage": "won"}, auth=agent.auth)
            assert changed.status_code == 200, changed.text
            assert changed.json()["stage"] == "won"
            assert agent.token().token_type == "DPoP"


def test_the_examples_import_without_side_effects() -> None:
    agent = load_example("agent_sdk")
    assert callable(agent.main) and agent.PROVIDER == "crm"
    assert AgentClient.__name__ in agent.__dict__
