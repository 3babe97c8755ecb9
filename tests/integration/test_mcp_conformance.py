"""The public MCP conformance suite (`@modelcontextprotocol/conformance`, pinned in
tests/support/mcp_conformance/package.json) against ValetKey's `/mcp`, offline.

Its server mode connects a bare MCP client to a URL: it cannot send a header, and it has no
OAuth flow of its own (its auth scenarios are client-mode ones, where it plays the
authorization server). So it talks to a test-only proxy that adds the agent's Bearer token
for `{issuer}/mcp` to every request and changes nothing else (`mcp_conformance.proxy`);
ValetKey's own checks stay as they are. Behind ValetKey is an upstream with the tools the
scenarios call, listed as `conf__TOOL`.

The runner's verdict is taken as it gives it: its exit code under the expected-failures
baseline (tests/support/mcp_conformance/baseline.yml, each entry explained there) is 1 on a
failure that is not in the baseline and on a baseline entry that now passes. The test also
reads the runner's checks.json files and names the failing or stale scenarios itself. Two
more tests back baseline entries' reasons: the DNS-rebinding scenario without the proxy (no
token, as a rebinding browser would come), and the tool scenarios' tools called by their
namespaced names (the naming is all that keeps those scenarios from passing)."""

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.integration.helpers import make_tenant
from tests.support.databases import new_database_url
from tests.support.mcp_conformance.proxy import bearer_proxy
from tests.support.mcp_conformance.upstream import (
    PNG,
    PREFIX,
    SCHEMA_2020_12,
    TOOLS,
    running_conformance_upstream,
)
from tests.support.server import RunningServer, running_server

SUITE_DIR = Path(__file__).resolve().parents[1] / "support" / "mcp_conformance"
RUNNER = SUITE_DIR / "run.mjs"
BASELINE = SUITE_DIR / "baseline.yml"
PACKAGE = SUITE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance"
VERSION = "0.1.16"
NODE = (20, 18, 1)  # its undici's floor (fs.globSync, for Node 20, is shimmed by run.mjs)
# The active suite's scenarios (`conformance list --server`, less the two the suite itself
# holds as pending): a new pinned version that adds or drops one shows up here first.
SCENARIOS = {
    "server-initialize", "logging-set-level", "ping", "completion-complete", "tools-list",
    "tools-call-simple-text", "tools-call-image", "tools-call-audio",
    "tools-call-embedded-resource", "tools-call-mixed-content", "tools-call-with-logging",
    "tools-call-error", "tools-call-with-progress", "tools-call-sampling",
    "tools-call-elicitation", "elicitation-sep1034-defaults", "server-sse-multiple-streams",
    "elicitation-sep1330-enums", "resources-list", "resources-read-text",
    "resources-read-binary", "resources-templates-read", "resources-subscribe",
    "resources-unsubscribe", "prompts-list", "prompts-get-simple", "prompts-get-with-args",
    "prompts-get-embedded-resource", "prompts-get-with-image", "dns-rebinding-protection",
}  # fmt: skip


@dataclass
class Gateway:
    server: RunningServer
    token: str  # the agent's, for {issuer}/mcp
    proxied: str  # the proxy's /mcp: ValetKey's /mcp with the token added


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A ValetKey of its own (SQLite: the protocol does not depend on the database), one
    tenant with the `conf` upstream, an agent allowed its tools, and the proxy."""
    if shutil.which("node") is None or not (PACKAGE / "dist" / "index.js").is_file():
        raise RuntimeError(
            "the MCP conformance suite needs node and `npm ci --prefix "
            "tests/support/mcp_conformance` (scripts/test.sh does both)"
        )
    found = subprocess.run(["node", "-p", "process.versions.node"], capture_output=True,
                           text=True, check=True).stdout.strip()  # fmt: skip
    if tuple(int(p) for p in found.split(".")) < NODE:
        raise RuntimeError(f"the MCP conformance suite needs Node.js >= 20.18.1, not {found}")
    tmp = tmp_path_factory.mktemp("mcp-conformance")
    env = {"VALETKEY_FETCH_ALLOW_HOSTS": "127.0.0.1"}
    with (
        running_server(new_database_url("sqlite", tmp), tmp / "data", **env) as server,
        running_conformance_upstream() as upstream_url,
    ):
        tenant = make_tenant(server)
        server.cli(
            "mcp", "upstreams", "add", "conf", "--tenant", tenant.name, "--url", upstream_url
        )
        agent = tenant.new_agent("conformance-client", "mcp:read", "mcp:write")
        granted = httpx.post(server.base_url + "/oauth/token", data={
            "grant_type": "client_credentials", "resource": f"{server.issuer}/mcp",
            "scope": "mcp:read mcp:write",
        }, auth=(agent["client_id"], agent["client_secret"]))  # fmt: skip
        assert granted.status_code == 200, granted.text
        token = str(granted.json()["access_token"])
        with bearer_proxy(server.base_url, token) as proxy:
            yield Gateway(server, token, proxy + "/mcp")


def baseline() -> set[str]:
    loaded = yaml.safe_load(BASELINE.read_text()) or {}
    return set(loaded.get("server") or [])


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the runner colours its report whatever the terminal
_RESULT_DIR = re.compile(r"server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z")


def conformance(url: str, out: Path, *args: str) -> tuple[int, str, dict[str, list[Any]]]:
    """Run `conformance server --url URL ARGS` offline; its exit code, its output, and each
    scenario's checks (from `OUT/server-SCENARIO-TIMESTAMP/checks.json`)."""
    command = ["node", str(RUNNER), "server", "--url", url, "--output-dir", str(out), *args]
    run = subprocess.run(command, cwd=out.parent, capture_output=True, text=True, timeout=120)
    checks: dict[str, list[Any]] = {}
    for path in sorted(out.glob("server-*/checks.json")):
        named = _RESULT_DIR.fullmatch(path.parent.name)
        assert named is not None, path
        checks[named["scenario"]] = json.loads(path.read_text())
    return run.returncode, _ANSI.sub("", run.stdout + run.stderr), checks


def failed(checks: list[dict[str, Any]]) -> bool:
    """The runner's own rule: any FAILURE or WARNING check fails the scenario."""
    return any(c["status"] in ("FAILURE", "WARNING") for c in checks)


def why(checks: list[dict[str, Any]]) -> list[str]:
    return [f"{c['id']}: {c['status']} {c.get('errorMessage') or ''}".strip() for c in checks]


def test_the_conformance_suite_passes_but_for_its_baseline(
    gateway: Gateway, tmp_path: Path
) -> None:
    installed = json.loads((PACKAGE / "package.json").read_text())["version"]
    assert installed == VERSION, f"node_modules has {installed}: run npm ci (scripts/test.sh)"
    code, output, results = conformance(
        gateway.proxied, tmp_path / "results", "--expected-failures", str(BASELINE)
    )
    print(output)  # the runner's report: shown with -s, and with a failure
    assert set(results) == SCENARIOS, output
    expected = baseline()
    assert expected <= SCENARIOS, f"baseline.yml names no such scenario: {expected - SCENARIOS}"
    passing = {s for s, checks in results.items() if not failed(checks)}
    unexpected = {s: why(results[s]) for s in sorted(SCENARIOS - passing - expected)}
    assert not unexpected, f"failures not in baseline.yml: {json.dumps(unexpected, indent=1)}"
    stale = sorted(passing & expected)
    assert not stale, f"baseline.yml entries that now pass (remove them): {stale}"
    assert code == 0, output  # and the runner's own verdict agrees


def test_without_a_token_the_rebinding_request_is_refused(gateway: Gateway, tmp_path: Path) -> None:
    """The DNS-rebinding scenario straight at `/mcp`, as a rebinding browser would come: no
    token. The forged Host/Origin request is refused before anything else (403); the
    genuine one gets the usual 401 challenge."""
    _, output, results = conformance(
        gateway.server.base_url + "/mcp", tmp_path / "results",
        "--scenario", "dns-rebinding-protection",
    )  # fmt: skip
    checks = {c["id"]: c for c in results["dns-rebinding-protection"]}
    forged = checks["localhost-host-rebinding-rejected"]
    assert forged["status"] == "SUCCESS" and forged["details"]["statusCode"] == 403, output
    assert checks["localhost-host-valid-accepted"]["details"]["statusCode"] == 401, output


async def _namespaced(gateway: Gateway) -> tuple[dict[str, types.Tool], dict[str, Any]]:
    headers = {"Authorization": f"Bearer {gateway.token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(gateway.server.issuer + "/mcp", http_client=http),
               mode="legacy") as client,  # the 2025-11-25 handshake, as the suite's client
    ):  # fmt: skip
        tools = {t.name: t for t in (await client.list_tools()).tools}
        names = ("test_simple_text", "test_image_content", "test_audio_content",
                 "test_embedded_resource", "test_multiple_content_types",
                 "test_error_handling")  # fmt: skip
        results = {n: await client.call_tool(PREFIX + n, {}) for n in names}
    return tools, results


def test_baselined_tool_scenarios_pass_under_namespaced_names(gateway: Gateway) -> None:
    """The checks of tools-call-image/-audio/-embedded-resource/-mixed-content (and of the
    simple-text, error and JSON Schema 2020-12 scenarios, which pass or are pending for other
    reasons), on the same tools called as ValetKey names them: the upstream's content comes
    through whole, so the bare names are all that fails those scenarios."""
    tools, results = asyncio.run(_namespaced(gateway))
    assert {PREFIX + t.name for t in TOOLS} == set(tools)

    def blocks(name: str, kind: type[Any]) -> list[Any]:
        result = results[name]
        assert not result.is_error, result
        return [b for b in result.content if isinstance(b, kind)]

    (text,) = blocks("test_simple_text", types.TextContent)
    assert text.text == "This is a simple text response for testing."
    (image,) = blocks("test_image_content", types.ImageContent)
    assert image.data == PNG and image.mime_type == "image/png"
    (audio,) = blocks("test_audio_content", types.AudioContent)
    assert audio.data and audio.mime_type == "audio/wav"
    (embedded,) = blocks("test_embedded_resource", types.EmbeddedResource)
    resource = embedded.resource
    assert isinstance(resource, types.TextResourceContents)
    assert resource.uri and resource.mime_type == "text/plain" and resource.text
    mixed = results["test_multiple_content_types"]
    assert [b.type for b in mixed.content] == ["text", "image", "resource"]
    error = results["test_error_handling"]  # the upstream's own tool error, not ValetKey's
    assert error.is_error and "valetkey/refused" not in (error.meta or {})
    assert isinstance(error.content[0], types.TextContent)
    assert error.content[0].text == "This tool intentionally returns an error for testing"
    schema = tools[PREFIX + "json_schema_2020_12_tool"].input_schema
    assert schema["$schema"] == SCHEMA_2020_12 and "address" in schema["$defs"]
    assert schema["additionalProperties"] is False
