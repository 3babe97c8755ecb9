"""Fixtures for the SDK's tests: every test talks to a real ValetKey (the session's server
per backend) over HTTP; nothing of ValetKey is mocked.

`world` is one tenant per module and backend with the actions the tests ask about and an
approver; each test makes its own agents, so token counts in the audit log are its own.
"""

import importlib.util
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import uvicorn

from tests.conftest import TenantSetup
from tests.integration.helpers import add_crm_actions, audit_events, make_tenant
from tests.support.platform import Platform
from tests.support.server import RunningServer, free_port
from valetkey.sdk import AgentClient, AsyncAgentClient

APPROVER = "ann@acme.example"
PLATFORM_SECRET = "platform-client-secret-1a2b"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass
class World:
    tenant: TenantSetup
    clients: list[AgentClient] = field(default_factory=list)

    @property
    def server(self) -> RunningServer:
        return self.tenant.server

    @property
    def name(self) -> str:
        return self.tenant.name

    @property
    def crm(self) -> str:
        return self.tenant.crm

    @property
    def issuer(self) -> str:
        return self.server.issuer

    def agent(self, *scopes: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
        """A new agent of this tenant holding `scopes` (default: read and write deals)."""
        name = "bot-" + secrets.token_hex(3)
        return self.tenant.new_agent(name, *(scopes or ("deals:read", "deals:write")), extra=extra)

    def client(self, agent: dict[str, Any], **options: Any) -> AgentClient:
        options.setdefault("resource", self.crm)
        client = AgentClient(self.issuer, agent["client_id"], agent["client_secret"], **options)
        self.clients.append(client)
        return client

    def async_client(self, agent: dict[str, Any], **options: Any) -> AsyncAgentClient:
        options.setdefault("resource", self.crm)
        return AsyncAgentClient(self.issuer, agent["client_id"], agent["client_secret"], **options)

    def events(self, kind: str, agent: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        args = ["--tenant", self.name, "--type", kind]
        if agent is not None:
            args += ["--agent", agent["id"]]
        return audit_events(self.server, *args)

    def issued(self, agent: dict[str, Any]) -> int:
        """How many tokens ValetKey issued to `agent` (its `token.issued` audit events)."""
        return len(self.events("token.issued", agent))


def add_actions(tenant: TenantSetup) -> None:
    add_crm_actions(tenant)
    tenant.server.cli("users", "create", APPROVER, "--tenant", tenant.name, "--role", "approver")


@pytest.fixture(scope="module")
def world(server: RunningServer) -> Iterator[World]:
    built = World(make_tenant(server))
    add_actions(built.tenant)
    yield built
    for client in built.clients:
        client.close()


def add_provider(server: RunningServer, tenant: str, platform: Platform) -> None:
    """The stand-in platform as the tenant's provider `crm`."""
    server.cli("providers", "add", "crm", "--tenant", tenant,
               "--authorize-url", platform.authorize_url, "--token-url", platform.token_url,
               "--revoke-url", platform.revoke_url, "--api-base", platform.api_base,
               "--client-id", platform.client_id, "--client-secret-stdin",
               input=PLATFORM_SECRET + "\n")  # fmt: skip


def connect(server: RunningServer, tenant: str, platform: Platform, agent: dict[str, Any]) -> None:
    """The agent's own connection to the platform (a grant made outside ValetKey, imported)."""
    refresh = platform.issue_refresh_token("bot@crm")
    server.cli("connections", "import", "--tenant", tenant, "--provider", "crm",
               "--agent", agent["id"], "--refresh-token-stdin", input=refresh + "\n")  # fmt: skip


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 (lifespan included) for the block."""
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                            lifespan="on", ws="none")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(10)
