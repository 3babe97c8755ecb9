"""`valetkey providers`: presets and custom platforms, the gateway audience, and a client
secret that is read from stdin, never shown and never stored in the clear."""

from pathlib import Path

from tests.conftest import TenantSetup

SECRET = "provider-secret-Zq8w3Rk1x7"


def _add(tenant: TenantSetup, name: str, *args: str) -> dict[str, object]:
    return dict(tenant.server.cli("providers", "add", name, "--tenant", tenant.name,
                                  "--client-id", "vk-client", "--client-secret-stdin", *args,
                                  input=SECRET + "\n"))  # fmt: skip


def test_providers_from_presets_and_by_hand(tenant: TenantSetup) -> None:
    server, name = tenant.server, tenant.name
    slack = _add(tenant, "chat", "--preset", "slack", "--scope", "chat:write")
    assert slack["scope_delimiter"] == "," and slack["refresh"]["rotating"] is True  # type: ignore[index]
    assert slack["audience"] == f"{server.issuer}/v1/gateway/chat"
    base = "http://127.0.0.1:9"
    local = _add(tenant, "crm", "--authorize-url", f"{base}/authorize",
                 "--token-url", f"{base}/token", "--api-base", f"{base}/api")  # fmt: skip
    assert local["api_base"] == "http://127.0.0.1:9/api" and local["preset"] is None
    listed = server.cli("providers", "list", "--tenant", name)
    assert [p["name"] for p in listed] == ["chat", "crm"]
    shown = server.cli("providers", "show", "crm", "--tenant", name)
    assert SECRET not in str(shown) and "client_secret" not in shown
    resources = server.cli("resources", "list", "--tenant", name)
    gateway = next(r for r in resources if r["uri"].endswith("/v1/gateway/crm"))
    assert set(gateway["scopes"]) == {"crm:read", "crm:write", "crm:delete"}
    server.cli("providers", "remove", "crm", "--tenant", name)
    assert [p["name"] for p in server.cli("providers", "list", "--tenant", name)] == ["chat"]
    events = {e["type"] for e in server.cli("audit", "search", "--tenant", name)}
    assert {"provider.added", "provider.removed"} <= events


def test_refusals(tenant: TenantSetup) -> None:
    server, name = tenant.server, tenant.name
    no_stdin = server.cli_raw("providers", "add", "x", "--tenant", name, "--preset", "slack",
                              "--client-id", "c")  # fmt: skip
    assert no_stdin.exit_code != 0 and "stdin" in no_stdin.output
    unknown = server.cli_raw("providers", "add", "x", "--tenant", name, "--preset", "myspace",
                             "--client-id", "c", "--client-secret-stdin", input="s\n")  # fmt: skip
    assert unknown.exit_code != 0 and "unknown preset" in unknown.output
    plain = server.cli_raw("providers", "add", "x", "--tenant", name, "--client-id", "c",
                           "--client-secret-stdin", "--authorize-url", "http://evil.example/a",
                           "--token-url", "http://evil.example/t", "--api-base",
                           "http://evil.example", input="s\n")  # fmt: skip
    assert plain.exit_code != 0 and "https" in plain.output
    _add(tenant, "dup", "--preset", "github")
    again = server.cli_raw("providers", "add", "dup", "--tenant", name, "--preset", "github",
                           "--client-id", "c", "--client-secret-stdin", input="s\n")  # fmt: skip
    assert again.exit_code != 0


def test_the_client_secret_is_never_stored_in_the_clear(tenant: TenantSetup) -> None:
    if "sqlite" not in tenant.server.env["VALETKEY_DATABASE_URL"]:
        return  # the file check reads SQLite's files; PostgreSQL stores the same ciphertext
    _add(tenant, "hub", "--preset", "hubspot")
    path = Path(tenant.server.env["VALETKEY_DATABASE_URL"].split("///", 1)[1])
    raw = b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal"))
                   if p.exists())  # fmt: skip
    assert SECRET.encode() not in raw
    export = tenant.server.cli_raw("audit", "export", "--format", "jsonl", "--tenant", tenant.name)
    assert SECRET not in export.stdout
