"""docs/sdk.md runs as written: every ```python block, in order, in one namespace, against a
live ValetKey set up as the page says (the resource https://crm.acme.example, the CRM
provider with the agent's connection, a user who delegated, an approver who approves
whatever is pending), and the CRM's own API served by examples/resource_server.py."""

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TenantSetup
from tests.sdk.conftest import (
    APPROVER,
    PLATFORM_SECRET,
    add_actions,
    add_provider,
    connect,
    load_example,
    serving,
)
from tests.support.idp import FakeIdP, running_idp
from tests.support.platform import Platform, running_platform
from tests.support.server import CliFailed

DOC = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"
CRM = "https://crm.acme.example"
USER = "mia@acme.example"


def snippets() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.MULTILINE | re.DOTALL)


class Approver:
    """A human who approves every pending approval of the tenant, from another thread."""

    def __init__(self, tenant: TenantSetup) -> None:
        self.tenant = tenant
        self.approved: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Approver":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        server, name = self.tenant.server, self.tenant.name
        while not self._stop.wait(0.2):
            try:
                for approval in server.cli("approvals", "list", "--tenant", name,
                                           "--status", "pending"):  # fmt: skip
                    server.cli("approvals", "approve", approval["id"], "--by", APPROVER)
                    self.approved.append(approval["id"])
            except CliFailed:
                continue  # decided meanwhile: look again


@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    with running_idp() as running:
        yield running


@pytest.fixture
def platform() -> Iterator[Platform]:
    with running_platform(client_secret=PLATFORM_SECRET) as running:
        yield running


def test_the_sdk_page_runs(
    tenant: TenantSetup, idp: FakeIdP, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, name = tenant.server, tenant.name
    server.cli("resources", "create", CRM, "--tenant", name,
               "--scope", "deals:read", "--scope", "deals:write")  # fmt: skip
    add_actions(tenant)
    agent = tenant.new_agent("crm-bot", "deals:read", "deals:write",
                             "crm:read", "crm:write", "crm:delete")  # fmt: skip
    add_provider(server, name, platform)
    connect(server, name, platform, agent)
    server.cli("issuers", "add", idp.issuer, "--tenant", name, "--jwks-uri", idp.jwks_uri,
               "--audience", "valetkey")  # fmt: skip
    server.cli("users", "create", USER, "--tenant", name)
    server.cli("delegations", "create", "--tenant", name, "--user", USER, "--agent",
               agent["id"], "--resource", CRM, "--scope", "deals:read")  # fmt: skip
    pep = server.cli("clients", "create", "pep", "--tenant", name, "--right", "pdp")
    for variable in ("VALETKEY_CLIENT_SECRET_FILE", "VALETKEY_PRIVATE_KEY_FILE",
                     "VALETKEY_RESOURCE", "VALETKEY_SCOPE", "VALETKEY_DPOP"):  # fmt: skip
        monkeypatch.delenv(variable, raising=False)
    for variable, value in (("VALETKEY_ISSUER", server.issuer),
                            ("VALETKEY_CLIENT_ID", agent["client_id"]),
                            ("VALETKEY_CLIENT_SECRET", agent["client_secret"]),
                            ("PEP_CLIENT_ID", pep["client_id"]),
                            ("PEP_CLIENT_SECRET", pep["client_secret"]),
                            ("RESOURCE_AUDIENCE", CRM)):  # fmt: skip
        monkeypatch.setenv(variable, value)

    blocks = snippets()
    assert len(blocks) >= 12
    crm_api = load_example("resource_server").app
    namespace: dict[str, Any] = {"user_assertion": idp.assertion(USER)}
    with serving(crm_api) as base, Approver(tenant) as human:
        namespace["CRM_API"] = base
        for number, block in enumerate(blocks, 1):
            try:
                exec(compile(block, f"docs/sdk.md python block {number}", "exec"), namespace)
            except Exception as exc:
                raise AssertionError(f"block {number} failed:\n{block}") from exc
    assert len(human.approved) == 2  # the intent, then the gateway call
    assert any(call.headers.get("x-correlation-id") == "ticket-4711"
               for call in platform.api_calls)  # fmt: skip
    assert platform.api_calls[-1].headers["x-agent-id"] == agent["id"]

    # The page's FastAPI app, with its middleware, answers the page's agent.
    client = namespace["client"]

    async def call_app() -> httpx.Response:
        transport = httpx.ASGITransport(app=namespace["app"])
        async with httpx.AsyncClient(transport=transport, base_url="http://crm.test") as http:
            token = client.token().value
            return await http.get("/deals/42", headers={"Authorization": f"Bearer {token}"})

    answer = asyncio.run(call_app())
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"deal": "42", "agent": agent["id"], "user": None}
    client.close()
