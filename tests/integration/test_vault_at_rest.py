"""Nothing the vault guards is ever readable at rest: after providers, imports, a connect
flow, refreshes with rotation, gateway calls, a fault, a `needs_reauth`, a revocation and a
master-key rotation, the raw SQLite file (and its WAL) and the audit export hold no
platform token, no refresh token, no PKCE verifier and no provider client secret."""

import concurrent.futures
from pathlib import Path

import httpx

from tests.integration.helpers import make_tenant
from tests.integration.test_gateway import (
    SECRET,
    add_provider,
    call,
    gateway_agent,
    gateway_token,
    import_for,
)
from tests.integration.test_vault_flows import sign_in_token
from tests.support.databases import new_database_url
from tests.support.platform import running_platform
from tests.support.server import running_server


def test_no_platform_token_or_client_secret_in_the_database_file_or_audit_export(
    tmp_path: Path,
) -> None:
    database = new_database_url("sqlite", tmp_path)
    with running_platform(client_secret=SECRET) as platform, running_server(
        database, tmp_path / "data"
    ) as server:  # fmt: skip
        tenant = make_tenant(server)
        name = tenant.name
        add_provider(server, name, platform)
        agent = gateway_agent(tenant)
        server.cli("users", "create", "mia@acme.example", "--tenant", name)
        import_for(server, name, platform, "--agent", agent["id"], user="bot@crm")
        token = gateway_token(server, agent)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:  # refresh + rotation
            assert set(pool.map(lambda _: call(server, token, "/deals/1").status_code,
                                range(16))) == {200}  # fmt: skip
        platform.expire_access_tokens()
        assert call(server, token, "/deals/1").status_code == 200  # a second rotation
        platform.expire_access_tokens()
        platform.quirks.token_status = 503
        assert call(server, token, "/deals/1").status_code == 502
        platform.quirks.token_status = None
        # A connect flow completed (its code, verifier and tokens) and one left pending.
        person = sign_in_token(tenant, "sam@acme.example")
        with httpx.Client(timeout=30) as browser:
            for complete in (True, False):
                start = browser.get(server.base_url + "/v1/connections/start?provider=crm",
                                    headers={"Authorization": f"Bearer {person}"},
                                    follow_redirects=complete)  # fmt: skip
                assert start.status_code == 200 if complete else 302
                if complete:  # the callback sends the browser to the console's page
                    assert any(r.headers.get("location") == "/console/connections?done=connected"
                               for r in start.history)  # fmt: skip
        mia = import_for(server, name, platform, "--user", "mia@acme.example", user="mia@crm")
        platform.quirks.invalid_grant = True
        platform.expire_access_tokens()
        assert call(server, token, "/deals/1").status_code == 409
        platform.quirks.invalid_grant = False
        server.cli("connections", "revoke", mia["id"])
        server.cli("keys", "rotate-master")
        secrets = {SECRET, *platform.issued_tokens()}
        exported = server.cli_raw("audit", "export", "--tenant", name)
        assert exported.exit_code == 0
        export = exported.stdout_bytes
        assert b"connection.refreshed" in export and b"gateway.called" in export
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("valetkey.db*"))
    assert len(raw) > 100_000 and len(secrets) > 5
    for secret in secrets:
        assert secret.encode() not in raw, f"{secret[:12]}… is in the database file"
        assert secret.encode() not in export, f"{secret[:12]}… is in the audit export"
