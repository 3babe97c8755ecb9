"""The MCP examples run as written: `examples/mcp_upstream.py` as a tool server behind the
live ValetKey, `examples/mcp_client.py` as the agent's MCP client, and the client
configuration names ValetKey's `/mcp`."""

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TenantSetup
from tests.support.server import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def upstream() -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TOOLS_TOKEN"}
    process = subprocess.Popen([sys.executable, str(EXAMPLES / "mcp_upstream.py"), "--port",
                                str(port)], env=env)  # fmt: skip
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 20
        while True:  # listening yet?
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_the_mcp_examples_run_behind_valetkey(
    tenant: TenantSetup, upstream: str, tmp_path: Path
) -> None:
    server = tenant.server
    server.cli("mcp", "upstreams", "add", "crm", "--tenant", tenant.name, "--url", upstream)
    agent = tenant.new_agent("mcp-example", "mcp:read", "mcp:delete")
    secret = tmp_path / "secret"
    secret.write_text(agent["client_secret"])
    env = {**os.environ, "VALETKEY_ISSUER": server.issuer, "VALETKEY_CLIENT_ID": agent["id"],
           "VALETKEY_CLIENT_SECRET_FILE": str(secret)}  # fmt: skip
    env.pop("VALETKEY_CLIENT_SECRET", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(EXAMPLES / "mcp_client.py"), *args],
                              env=env, capture_output=True, text=True, timeout=60)  # fmt: skip

    read = run("crm__get_deal", "42")
    assert read.returncode == 0, read.stderr
    assert "tools: crm__get_deal, crm__delete_deal" in read.stdout
    assert '"name": "Acme renewal"' in read.stdout
    held = run("crm__delete_deal", "42")
    assert held.returncode == 1 and "refused:" in held.stdout and "approval" in held.stdout
    config = json.loads((EXAMPLES / "mcp_client_config.json").read_text())
    assert config["mcpServers"]["valetkey"]["url"].endswith("/mcp")
