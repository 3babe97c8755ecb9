"""ValetKey's SDK, for agents and for the resource servers they call.

Agents (`AgentClient`, `AsyncAgentClient`): their own short-lived tokens, cached and
refreshed in the background; token exchange to act for a user; `authorize()` before every
tool call, with `ApprovalRequired.wait()` when a human must decide; the gateway as an httpx
client, so platform tokens stay in ValetKey's vault; an `httpx.Auth` for any other API;
DPoP (`dpop=True`); and `correlation_id`, carried on every request.

Resource servers: `TokenVerifier` (RFC 9068 JWTs and DPoP proofs against the issuer's
JWKS), `require_token` for FastAPI, `TokenMiddleware` for any ASGI app, and
`AuthZenClient` to ask ValetKey's policies.

The SDK imports no server code (an import-linter contract says so) and never logs,
prints or puts a token into an exception message. See docs/sdk.md.
"""

from valetkey.sdk.agent import AgentClient
from valetkey.sdk.agent_async import AsyncAgentClient
from valetkey.sdk.asgi import TokenMiddleware, require_token
from valetkey.sdk.auth import AgentAuth
from valetkey.sdk.authzen import AsyncAuthZenClient, AuthZenClient
from valetkey.sdk.correlation import correlation_id
from valetkey.sdk.errors import (
    ApprovalRequired,
    ApprovalTimeout,
    Denied,
    GatewayError,
    InvalidToken,
    MissingToken,
    OAuthError,
    ProblemError,
    RateLimited,
    SDKError,
)
from valetkey.sdk.models import AccessToken, Approval, Decision, Intent, Reason
from valetkey.sdk.verifier import TokenVerifier, VerifiedToken

__all__ = [
    "AccessToken",
    "AgentAuth",
    "AgentClient",
    "Approval",
    "ApprovalRequired",
    "ApprovalTimeout",
    "AsyncAgentClient",
    "AsyncAuthZenClient",
    "AuthZenClient",
    "Decision",
    "Denied",
    "GatewayError",
    "Intent",
    "InvalidToken",
    "MissingToken",
    "OAuthError",
    "ProblemError",
    "RateLimited",
    "Reason",
    "SDKError",
    "TokenMiddleware",
    "TokenVerifier",
    "VerifiedToken",
    "correlation_id",
    "require_token",
]
