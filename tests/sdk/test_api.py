"""The SDK's public surface and its pure parts, without a server: the exported names (as
httpx's test_exported_members does), the token cache's timing caps, correlation ids,
intents, and that no token or secret ever shows in a repr or an error message."""

import subprocess
import sys
import time

import pytest

import valetkey.sdk as sdk
from valetkey.sdk import (
    AccessToken,
    AgentClient,
    Approval,
    ApprovalRequired,
    Decision,
    Intent,
    InvalidToken,
    MissingToken,
    correlation_id,
)
from valetkey.sdk._core import DEFAULT_LIFETIME, MAX_LIFETIME, lifetime, schedule
from valetkey.sdk.asgi import challenge
from valetkey.sdk.correlation import current_correlation_id
from valetkey.sdk.dpop import DPoPKey, htu

EXPECTED = {
    "AccessToken", "AgentAuth", "AgentClient", "Approval", "ApprovalRequired",
    "ApprovalTimeout", "AsyncAgentClient", "AsyncAuthZenClient", "AuthZenClient", "Decision",
    "Denied", "GatewayError", "Intent", "InvalidToken", "MissingToken", "OAuthError",
    "ProblemError", "RateLimited", "Reason", "SDKError", "TokenMiddleware", "TokenVerifier",
    "VerifiedToken", "correlation_id", "require_token",
}  # fmt: skip


def test_exported_members() -> None:
    assert set(sdk.__all__) == EXPECTED
    for name in sdk.__all__:
        member = getattr(sdk, name)
        assert getattr(member, "__module__", "valetkey.sdk").startswith("valetkey.sdk"), name


def test_importing_the_sdk_does_not_import_fastapi() -> None:
    code = (
        "import sys, valetkey.sdk\nprint(*(m in sys.modules for m in ('fastapi', 'valetkey.web')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    ("expires_in", "expected"),
    [(900, 900.0), (10**9, MAX_LIFETIME), (None, DEFAULT_LIFETIME), ("900", DEFAULT_LIFETIME),
     (True, DEFAULT_LIFETIME), (0, 1.0), (-5, 1.0), (2.5, 2.5)],
)  # fmt: skip
def test_lifetimes_are_capped_and_defaulted(expires_in: object, expected: float) -> None:
    assert lifetime(expires_in) == expected


def test_refresh_comes_before_the_end_of_use() -> None:
    token = AccessToken("t", "Bearer", time.time() + 900)
    cached = schedule(token, 900, 100.0, 0.8)
    assert cached.refresh_at == 100.0 + 720 and cached.usable_until == 100.0 + 895
    tiny = schedule(token, 2, 100.0, 0.99)  # a tiny lifetime still refreshes before its end
    assert tiny.refresh_at <= tiny.usable_until < 102.0
    assert cached.fresh(819.0) and not cached.fresh(820.0) and cached.usable(994.0)


def test_correlation_ids() -> None:
    assert current_correlation_id().startswith("cor_")
    assert current_correlation_id() != current_correlation_id()
    reset = correlation_id.set("ticket-4711")
    assert current_correlation_id() == "ticket-4711"
    correlation_id.reset(reset)
    reset = correlation_id.set("has spaces\nand newlines")  # ValetKey would replace it too
    assert current_correlation_id().startswith("cor_")
    correlation_id.reset(reset)


def test_intents() -> None:
    intent = Intent.of({"action": "crm:deals.delete", "resource": "crm:deals/7", "count": 1})
    assert intent.to_json() == {"action": "crm:deals.delete", "resource": "crm:deals/7",
                                "count": 1}  # fmt: skip
    assert Intent.of(intent) is intent
    with pytest.raises(TypeError):
        Intent.of({"action": "read", "resource": "x", "approval": "nope"})


def test_nothing_secret_in_reprs_and_messages() -> None:
    token = AccessToken("eyJ.secret.token", "DPoP", 0.0)
    assert "secret" not in repr(token)
    client = AgentClient("http://127.0.0.1:9", "agt_1", "vk_cs_very-secret")
    assert "very-secret" not in repr(client) and "very-secret" not in repr(vars(client))
    client.close()
    with pytest.raises(ValueError, match="exactly one"):
        AgentClient("http://127.0.0.1:9", "agt_1")
    with pytest.raises(ValueError, match="issuer"):
        AgentClient("ftp://x", "agt_1", "s")
    approval = Approval("apr_1", "pending", url="http://x/v1/approvals/apr_1")
    pending = ApprovalRequired(approval, decision=Decision("approval_required"))
    assert pending.retry_headers == {"X-ValetKey-Approval": "apr_1"}
    with pytest.raises(TypeError):
        pending.wait()  # no client behind it


def test_challenges() -> None:
    bare = challenge(MissingToken(), "https://crm.example")
    assert bare.startswith('Bearer realm="https://crm.example", DPoP') and "error" not in bare
    quoted = challenge(InvalidToken("invalid_token", 'bad "quote"\\'), "r")
    assert quoted == 'Bearer realm="r", error="invalid_token", error_description="bad quote"'
    dpop = challenge(InvalidToken("invalid_dpop_proof", "x", scheme="DPoP"), "r")
    assert dpop.startswith("DPoP ") and 'algs="' in dpop


def test_dpop_proofs_name_the_url_without_query() -> None:
    assert htu("https://api.example/a/b?x=1#f") == "https://api.example/a/b"
    key = DPoPKey()
    assert key.jkt and "d" not in key.public_jwk and key.jkt in repr(key)
