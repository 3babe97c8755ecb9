"""The README's walkthrough and `valetkey demo` run as written against a real server."""

import re
import shlex
from pathlib import Path

import httpx
import pytest

from tests.support.server import RunningServer

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_walkthrough_runs(server: RunningServer) -> None:
    commands = re.findall(r"^\$ (valetkey .+)$", README.read_text(), flags=re.MULTILINE)
    assert len(commands) >= 6
    secret = client_id = ""
    for command in commands:
        args = shlex.split(command)[1:]
        result = server.cli_raw(*args)
        assert result.exit_code == 0, f"{command}: {result.output}"
        if args[:2] == ["agents", "create"]:
            created = httpx.Response(200, content=result.stdout).json()
            client_id, secret = created["client_id"], created["client_secret"]
        if args[:2] == ["audit", "verify"]:
            assert '"ok": true' in result.stdout
    # The curl steps of the walkthrough, with the same parameters, after the suspension.
    refused = httpx.post(
        server.base_url + "/oauth/token",
        data={"grant_type": "client_credentials", "resource": "https://crm.acme.example"},
        auth=(client_id, secret),
    )
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"


def test_demo_tells_the_whole_story(server: RunningServer) -> None:
    result = server.cli_raw("demo", "--url", server.base_url)
    assert result.exit_code == 0, result.output
    for expected in ("invalid_scope", "invalid_client", "active = False", "intact", '"act"',
                     "approval_required", "approval_used", "intent_outside_mandate",
                     "suspected_injection", "decision.made", "approval.granted",
                     "gateway.called", "Acme renewal", "never a CRM token",
                     "X-Agent-Id: agt_", "tools/list → crm__get_deal, crm__delete_deal",
                     "tools/call crm__get_deal → ok", "held this call for a human's approval",
                     "mcp.tool_called"):  # fmt: skip
        assert expected in result.output, expected
    assert "Authorization: Bearer crm_at_" in result.output  # what the CRM saw, from the vault


def test_master_key_is_private_and_signing_keys_are_encrypted(server: RunningServer) -> None:
    if "sqlite" not in server.env["VALETKEY_DATABASE_URL"]:
        pytest.skip("reads the SQLite file; the key file is the same on every backend")
    key_file = server.data_dir / "master.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    path = Path(server.env["VALETKEY_DATABASE_URL"].split("///", 1)[1])
    database = b"".join(
        p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists()
    )
    assert b'"d":' not in database  # no private JWK in the clear
    assert b"vk1." in database  # envelope ciphertexts instead
