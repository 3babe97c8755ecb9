"""Shared fixtures: a real server per database backend, and a fresh tenant per test."""

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.databases import BACKENDS, new_database_url
from tests.support.mailbox import Mailbox, running_mailbox
from tests.support.server import RunningServer, running_server


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def mailbox() -> Iterator[Mailbox]:
    """The SMTP server every test server sends its approval emails to."""
    with running_mailbox() as box:
        yield box


@pytest.fixture(scope="session")
def server(
    backend: str, tmp_path_factory: pytest.TempPathFactory, mailbox: Mailbox
) -> Iterator[RunningServer]:
    """One running server per backend for the whole session (tests use their own tenants).
    It may notify webhooks on 127.0.0.1 (the tests' receivers) and mails `mailbox`."""
    tmp = tmp_path_factory.mktemp(f"server-{backend}")
    env = {"VALETKEY_SMTP_URL": mailbox.url, "VALETKEY_FETCH_ALLOW_HOSTS": "127.0.0.1"}
    with running_server(new_database_url(backend, tmp), tmp / "data", **env) as running:
        yield running


@dataclass
class TenantSetup:
    """A tenant with an admin sponsor, the CRM resource and one agent with a secret."""

    server: RunningServer
    tenant: dict[str, Any]
    sponsor: dict[str, Any]
    resource: dict[str, Any]
    agent: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.tenant["name"])

    @property
    def crm(self) -> str:
        return str(self.resource["uri"])

    def new_agent(self, name: str, *scopes: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
        args = ["agents", "create", name, "--tenant", self.name, "--sponsor", self.sponsor["email"]]
        for scope in scopes:
            args += ["--scope", scope]
        return dict(self.server.cli(*args, *extra))

    def introspector(self, name: str = "crm-api") -> dict[str, Any]:
        return dict(
            self.server.cli(
                "clients", "create", name, "--tenant", self.name, "--right", "introspect"
            )
        )


@pytest.fixture
def tenant(server: RunningServer) -> TenantSetup:
    name = "t-" + secrets.token_hex(4)
    t = server.cli("tenants", "create", name)
    sponsor = server.cli("users", "create", "sam@acme.example", "--tenant", name, "--role", "admin")
    crm = f"https://crm-{name}.example"
    resource = server.cli(
        "resources",
        "create",
        crm,
        "--tenant",
        name,
        "--scope",
        "deals:read",
        "--scope",
        "deals:write",
        "--scope",
        "deals:admin",
    )
    agent = server.cli(
        "agents",
        "create",
        "invoice-bot",
        "--tenant",
        name,
        "--sponsor",
        "sam@acme.example",
        "--scope",
        "deals:read",
    )
    return TenantSetup(server, t, sponsor, resource, agent)


@pytest.fixture
def tmp_data(tmp_path: Path) -> Path:
    return tmp_path
