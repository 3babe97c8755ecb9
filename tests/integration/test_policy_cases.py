"""Data-driven policy tests: the JSON cases under tests/policies/cases run through the real
CLI (`valetkey policies test`) against the default policy set and a tenant's own rules."""

import json
from pathlib import Path

import pytest

from tests.conftest import TenantSetup

POLICIES = Path(__file__).resolve().parents[1] / "policies"
ACTIONS = [("crm:deals.read", "read", "deals:read"), ("crm:deals.update", "write", "deals:write"),
           ("crm:deals.delete", "delete", "deals:write"), ("crm:deals.export", "bulk", None),
           ("mail.send", "send", None), ("pay.transfer", "spend", None)]  # fmt: skip


@pytest.fixture
def tenant_with_actions(tenant: TenantSetup) -> TenantSetup:
    tenant.agent = tenant.new_agent("case-bot", "deals:read", "deals:write")
    for name, klass, scope in ACTIONS:
        extra = ["--scope", scope] if scope else []
        tenant.server.cli("actions", "add", name, "--tenant", tenant.name, "--class", klass,
                          *extra)  # fmt: skip
    return tenant


@pytest.mark.parametrize(("cases", "policy"), [("default.json", None),
                                               ("tenant.json", "tenant.cedar")])  # fmt: skip
def test_policy_cases(tenant_with_actions: TenantSetup, cases: str, policy: str | None) -> None:
    server, name = tenant_with_actions.server, tenant_with_actions.name
    args = ["policies", "test", str(POLICIES / "cases" / cases), "--tenant", name]
    if policy is not None:  # tested before it is pushed, then pushed and tested again
        candidate = server.cli(*args, "--policies", str(POLICIES / policy))
        assert candidate["failed"] == 0, [c for c in candidate["cases"] if not c["passed"]]
        server.cli("policies", "push", str(POLICIES / policy), "--tenant", name)
    result = server.cli(*args)
    assert result["failed"] == 0, [c for c in result["cases"] if not c["passed"]]
    assert result["passed"] > 5


def test_a_failing_case_fails_the_command(tenant_with_actions: TenantSetup) -> None:
    server, name = tenant_with_actions.server, tenant_with_actions.name
    wrong = POLICIES / "cases" / "default.json"
    outcome = server.cli_raw("policies", "test", str(wrong), "--tenant", name, "--policies",
                             str(POLICIES / "send_allowed.cedar"), "--json")  # fmt: skip
    # Those rules let mail go out unasked and forbid deletes: the default's cases fail.
    assert outcome.exit_code == 1
    result = json.loads(outcome.stdout)
    failed = {c["name"] for c in result["cases"] if not c["passed"]}
    assert "send asks a human" in failed and "read within scope" not in failed


def test_invalid_policies_are_refused_with_reasons(tenant_with_actions: TenantSetup,
                                                   tmp_path: Path) -> None:  # fmt: skip
    server, name = tenant_with_actions.server, tenant_with_actions.name
    bad = tmp_path / "bad.cedar"
    bad.write_text("permit(principal, action, resource) when { context.nope == 1 };")
    outcome = server.cli_raw("policies", "validate", str(bad), "--tenant", name, "--json")
    assert outcome.exit_code == 1 and "nope" in outcome.stdout
    pushed = server.cli_raw("policies", "push", str(bad), "--tenant", name)
    assert pushed.exit_code != 0
    history = server.cli("policies", "history", "--tenant", name)
    assert history == []  # nothing invalid was ever stored
    server.cli("policies", "push", str(POLICIES / "tenant.cedar"), "--tenant", name)
    server.cli("policies", "push", str(POLICIES / "send_allowed.cedar"), "--tenant", name)
    back = server.cli("policies", "rollback", "--tenant", name)
    assert back == {"version": 1, "active": True}
    shown = server.cli("policies", "show", "--tenant", name)
    assert shown["version"] == 1 and "at-most-20-deletes-an-hour" in shown["text"]
