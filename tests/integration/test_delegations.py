"""Trusted issuers, role rights and delegations through the real CLI, on both backends."""

import httpx
import pytest

from tests.conftest import TenantSetup
from tests.support.server import CliFailed


def _fails(tenant: TenantSetup, *args: str) -> str:
    result = tenant.server.cli_raw(*args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    return str(result.output)


def test_trusted_issuer(tenant: TenantSetup) -> None:
    added = tenant.server.cli(
        "issuers",
        "add",
        "https://idp.acme.example",
        "--tenant",
        tenant.name,
        "--jwks-uri",
        "https://idp.acme.example/jwks",
        "--audience",
        "valetkey",
    )
    assert added["issuer"] == "https://idp.acme.example"
    assert added["claim"] == "email"
    assert added["audience"] == "valetkey"
    listed = tenant.server.cli("issuers", "list", "--tenant", tenant.name)
    assert [i["id"] for i in listed] == [added["id"]]
    assert "already trusted" in _fails(
        tenant,
        "issuers",
        "add",
        "https://idp.acme.example",
        "--tenant",
        tenant.name,
        "--jwks-uri",
        "https://idp.acme.example/jwks",
    )
    _fails(
        tenant,
        "issuers",
        "add",
        "https://x.example",
        "--tenant",
        tenant.name,
        "--jwks-uri",
        "file:///etc/passwd",
    )


def test_roles_default_and_custom(tenant: TenantSetup) -> None:
    roles = tenant.server.cli("roles", "list", "--tenant", tenant.name)
    assert roles["admin"] == ["deals:read", "deals:write", "deals:admin"]
    assert roles["member"] == ["deals:read"]
    assert roles["approver"] == ["deals:read"]
    updated = tenant.server.cli(
        "roles", "set", "member", "--tenant", tenant.name, "--scope", "deals:write"
    )
    assert updated == {"role": "member", "scopes": ["deals:write"]}
    assert tenant.server.cli("roles", "list", "--tenant", tenant.name)["member"] == ["deals:write"]
    _fails(tenant, "roles", "set", "member", "--tenant", tenant.name, "--scope", "nope:read")
    _fails(tenant, "roles", "set", "owner", "--tenant", tenant.name, "--scope", "deals:read")


def _delegate(
    tenant: str, user: str, agent: str, *scopes: str, extra: tuple[str, ...] = ()
) -> list[str]:
    """The argument list of `valetkey delegations create`."""
    args = ["delegations", "create", "--tenant", tenant, "--user", user, "--agent", agent]
    for scope in scopes:
        args += ["--scope", scope]
    return [*args, *extra]


def test_delegation_never_exceeds_the_users_rights(tenant: TenantSetup) -> None:
    server, name, agent = tenant.server, tenant.name, tenant.agent["id"]
    server.cli("users", "create", "mia@acme.example", "--tenant", name)  # a member
    made = server.cli(
        *_delegate(name, "sam@acme.example", agent, "deals:read",
                   extra=("--resource", tenant.crm, "--expires", "30d"))
    )  # fmt: skip
    assert made["user"] == "sam@acme.example"
    assert made["agent"] == agent
    assert made["scopes"] == ["deals:read"]
    assert made["resources"] == [tenant.crm]
    assert made["status"] == "active"
    assert made["expires_at"] is not None
    # Admin Sam holds deals:admin, so deals:write (implied) may be delegated too.
    server.cli(*_delegate(name, "sam@acme.example", "invoice-bot", "deals:write"))
    assert "does not hold" in _fails(
        tenant, *_delegate(name, "mia@acme.example", agent, "deals:write")
    )
    member = server.cli(*_delegate(name, "mia@acme.example", agent, "deals:read"))
    _fails(
        tenant,
        *_delegate(name, "mia@acme.example", agent, "deals:read",
                   extra=("--resource", "https://other.example")),
    )  # fmt: skip
    mine = server.cli("delegations", "list", "--tenant", name, "--user", "mia@acme.example")
    assert [d["id"] for d in mine] == [member["id"]]
    assert len(server.cli("delegations", "list", "--tenant", name, "--agent", agent)) == 3

    revoked = server.cli("delegations", "revoke", member["id"], "--tenant", name)
    assert revoked["status"] == "revoked"
    assert revoked["revoked_at"] is not None
    again = server.cli("delegations", "revoke", member["id"])
    assert again["status"] == "revoked"
    events = server.cli("audit", "search", "--tenant", name, "--type", "delegation.revoked")
    assert len(events) == 1
    assert events[0]["data"]["delegation_id"] == member["id"]


def test_deactivated_users_cannot_delegate_and_tenants_stay_apart(
    tenant: TenantSetup,
) -> None:
    server, name, agent = tenant.server, tenant.name, tenant.agent["id"]
    server.cli("users", "create", "lea@acme.example", "--tenant", name, "--role", "admin")
    made = server.cli(*_delegate(name, "lea@acme.example", agent, "deals:read"))
    server.cli("users", "deactivate", "lea@acme.example", "--tenant", name)
    _fails(tenant, *_delegate(name, "lea@acme.example", agent, "deals:read"))
    other = server.cli("tenants", "create", name + "-b")
    with pytest.raises(CliFailed):
        server.cli("delegations", "revoke", made["id"], "--tenant", other["name"])
    with pytest.raises(CliFailed):
        server.cli(*_delegate(other["name"], "sam@acme.example", agent, "deals:read"))


def test_tenant_admin_controls(tenant: TenantSetup) -> None:
    server, name, agent = tenant.server, tenant.name, tenant.agent
    introspector = tenant.introspector()
    token = httpx.post(
        server.base_url + "/oauth/token",
        data={"grant_type": "client_credentials", "resource": tenant.crm},
        auth=(agent["client_id"], agent["client_secret"]),
    ).json()["access_token"]

    def active() -> bool:
        return bool(
            httpx.post(
                server.base_url + "/oauth/introspect",
                data={"token": token},
                auth=(introspector["client_id"], introspector["client_secret"]),
            ).json()["active"]
        )

    assert active()
    settings = server.cli(
        "tenants",
        "set",
        name,
        "--block-scope",
        "deals:read",
        "--admin-only-scope",
        "deals:write",
    )["settings"]
    assert settings["blocked_scopes"] == ["deals:read"]
    assert settings["admin_only_scopes"] == ["deals:write"]
    assert settings["require_dpop"] is False
    assert not active()  # the block reaches the token already out, at once
    refused = httpx.post(
        server.base_url + "/oauth/token",
        data={"grant_type": "client_credentials", "resource": tenant.crm},
        auth=(agent["client_id"], agent["client_secret"]),
    )
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_scope"
    assert server.cli("tenants", "set", name, "--require-dpop")["settings"]["require_dpop"]
    unbound = httpx.post(
        server.base_url + "/oauth/token",
        data={"grant_type": "client_credentials", "resource": tenant.crm},
        auth=(agent["client_id"], agent["client_secret"]),
    )
    assert unbound.status_code == 400
    assert unbound.json()["error"] == "invalid_dpop_proof"  # agents must bind their tokens
    server.cli("tenants", "set", name, "--no-require-dpop")
    assert "blocked" in _fails(
        tenant, *_delegate(name, "sam@acme.example", agent["id"], "deals:read")
    )
    server.cli("roles", "set", "member", "--tenant", name, "--scope", "deals:write")
    server.cli("users", "create", "max@acme.example", "--tenant", name)
    assert "only an admin" in _fails(
        tenant, *_delegate(name, "max@acme.example", agent["id"], "deals:write")
    )
    server.cli(*_delegate(name, "sam@acme.example", agent["id"], "deals:write"))  # admins may
    server.cli("tenants", "set", name, "--unblock-scope", "deals:read")
    assert active()  # lifting the block restores the token (it was never revoked)


def test_set_password_reads_stdin_and_stores_only_argon2id(tenant: TenantSetup) -> None:
    server, name = tenant.server, tenant.name
    secret = "a long enough passphrase 42"
    done = server.cli(
        "users", "set-password", "sam@acme.example", "--tenant", name, input=secret + "\n"
    )
    assert done["password_set"] is True
    refused = _fails(tenant, "users", "set-password", "sam@acme.example", "--tenant", name)
    assert "at least 12" in refused  # empty stdin: refused, one line
    events = server.cli("audit", "search", "--tenant", name, "--type", "user.password_set")
    assert len(events) == 1
    export = server.cli_raw("audit", "export", "--format", "jsonl", "--tenant", name)
    assert export.exit_code == 0
    assert events[0]["id"] in export.stdout
    assert secret not in export.stdout
