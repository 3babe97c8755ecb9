"""`valetkey connections`: imported tokens live only encrypted in the vault, are never
shown, and revoking asks the platform (RFC 7009) and destroys them — also when their user
is deactivated."""

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from tests.conftest import TenantSetup

REFRESH = "platform-refresh-token-9f8e7d"
SECRET = "platform-client-secret-1a2b"


class Platform:
    """A stand-in platform's revocation endpoint on 127.0.0.1."""

    def __init__(self) -> None:
        self.revocations: list[tuple[dict[str, list[str]], str | None]] = []
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
                platform.revocations.append((parse_qs(body), self.headers.get("authorization")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def platform() -> Iterator[Platform]:
    running = Platform()
    yield running
    running.server.shutdown()
    running.server.server_close()


def _provider(tenant: TenantSetup, platform: Platform) -> None:
    tenant.server.cli("providers", "add", "crm", "--tenant", tenant.name,
                      "--authorize-url", f"{platform.base}/authorize",
                      "--token-url", f"{platform.base}/token",
                      "--revoke-url", f"{platform.base}/revoke",
                      "--api-base", f"{platform.base}/api", "--client-id", "vk-client",
                      "--client-secret-stdin", input=SECRET + "\n")  # fmt: skip


def _import(tenant: TenantSetup, *owner: str) -> dict[str, Any]:
    return dict(tenant.server.cli("connections", "import", "--tenant", tenant.name,
                                  "--provider", "crm", *owner, "--refresh-token-stdin",
                                  input=REFRESH + "\n"))  # fmt: skip


def test_import_list_show_and_revoke(tenant: TenantSetup, platform: Platform) -> None:
    server, name = tenant.server, tenant.name
    _provider(tenant, platform)
    made = _import(tenant, "--user", "sam@acme.example")
    assert set(made) >= {"id", "provider", "owner", "status", "expires_at", "scopes"}
    assert made["owner"] == "sam@acme.example" and made["status"] == "active"
    own = _import(tenant, "--agent", tenant.agent["id"])
    assert own["owner"] == tenant.agent["id"] and own["owner_kind"] == "agent"
    listed = server.cli("connections", "list", "--tenant", name)
    shown = server.cli("connections", "show", made["id"])
    assert REFRESH not in str(listed) + str(shown)
    revoked = server.cli("connections", "revoke", made["id"])
    assert revoked["status"] == "revoked" and revoked["platform_status"] == 200
    form, authorization = platform.revocations[0]
    assert form["token"] == [REFRESH] and form["token_type_hint"] == ["refresh_token"]
    assert authorization == "Basic " + base64.b64encode(f"vk-client:{SECRET}".encode()).decode()
    again = server.cli("connections", "revoke", made["id"])
    assert again["platform_status"] is None and len(platform.revocations) == 1  # once
    types = {e["type"] for e in server.cli("audit", "search", "--tenant", name)}
    assert {"connection.imported", "connection.revoked"} <= types


def test_deactivating_a_user_revokes_their_connections(
    tenant: TenantSetup, platform: Platform
) -> None:
    server, name = tenant.server, tenant.name
    _provider(tenant, platform)
    server.cli("users", "create", "mia@acme.example", "--tenant", name)
    mine = _import(tenant, "--user", "mia@acme.example")
    other = _import(tenant, "--user", "sam@acme.example")
    done = server.cli("users", "deactivate", "mia@acme.example", "--tenant", name)
    assert done["revoked_connections"] == [mine["id"]]
    assert server.cli("connections", "show", mine["id"])["status"] == "revoked"
    assert server.cli("connections", "show", other["id"])["status"] == "active"
    refused = server.cli_raw("connections", "import", "--tenant", name, "--provider", "crm",
                             "--user", "mia@acme.example", "--refresh-token-stdin",
                             input="x\n")  # fmt: skip
    assert refused.exit_code != 0 and "deactivated" in refused.output


def test_tokens_are_never_stored_in_the_clear(tenant: TenantSetup, platform: Platform) -> None:
    if "sqlite" not in tenant.server.env["VALETKEY_DATABASE_URL"]:
        pytest.skip("reads SQLite's files; PostgreSQL stores the same ciphertexts")
    _provider(tenant, platform)
    _import(tenant, "--user", "sam@acme.example")
    path = Path(tenant.server.env["VALETKEY_DATABASE_URL"].split("///", 1)[1])
    raw = b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal"))
                   if p.exists())  # fmt: skip
    assert REFRESH.encode() not in raw and SECRET.encode() not in raw
    export = tenant.server.cli_raw("audit", "export", "--format", "jsonl", "--tenant", tenant.name)
    assert REFRESH not in export.stdout and SECRET not in export.stdout
