"""`/v1` — ValetKey's own API. Errors are RFC 9457 problem+json; a missing or bad token is
401 with `WWW-Authenticate` (RFC 6750 §3, RFC 9449 §7.1).

`POST /v1/authorize`: the agent presents its token (Bearer, or DPoP with a proof whose
`ath` binds it to the token) and the intent; a deny is a normal 200 answer with reasons.
"""

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from valetkey.errors import Forbidden, InvalidInput, NotFound
from valetkey.identity.models import User
from valetkey.oauth import dpop
from valetkey.oauth.context import ClientContext
from valetkey.oauth.server import OAuthServer
from valetkey.policy.approvals import APPROVER_ROLES, Approvals
from valetkey.policy.authorizer import Authorizer, CallerError
from valetkey.policy.decision import Caller
from valetkey.policy.intent import IntentError, parse_intent
from valetkey.runtime import Runtime
from valetkey.web.correlation import correlation_id
from valetkey.web.errors import NO_STORE, json_response, problem

router = APIRouter(prefix="/v1", tags=["v1"])
MAX_BODY = 32 * 1024

_INTENT_SCHEMA = {
    "type": "object",
    "required": ["action", "resource"],
    "properties": {
        "action": {"type": "string", "example": "crm:deals.delete"},
        "resource": {"type": "string", "example": "crm:deals/123"},
        "count": {"type": "integer", "minimum": 0},
        "cost": {"type": "integer", "minimum": 0},
        "context": {"type": "object"},
        "approval_id": {"type": "string"},
    },
}


class Unauthorized(Exception):
    def __init__(self, scheme: str, error: str, description: str) -> None:
        super().__init__(description)
        self.scheme = scheme
        self.error = error
        self.description = description


def unauthorized(exc: Unauthorized) -> Response:
    response = problem(401, exc.error, "Unauthorized", exc.description)
    challenge = f'{exc.scheme} realm="valetkey", error="{exc.error}"'
    if exc.scheme == "DPoP":
        challenge += f', algs="{" ".join(dpop.DPOP_ALGORITHMS)}"'
    response.headers["WWW-Authenticate"] = challenge
    return response


def audiences(claims: dict[str, Any]) -> list[str]:
    """A token's `aud`, which JWT allows as a string or a list."""
    aud = claims.get("aud")
    return [aud] if isinstance(aud, str) else [str(a) for a in aud or ()]


async def token_claims(request: Request, path: str) -> dict[str, Any]:
    return (await _token(request, path))[0]


async def _token(request: Request, path: str) -> tuple[dict[str, Any], ClientContext]:
    return await token_from(
        request.app.state, request.method, request.headers.get("authorization", ""),
        request.headers.getlist("dpop"), path,
    )  # fmt: skip


async def token_from(
    state: Any, method: str, authorization: str, proofs: list[str], path: str
) -> tuple[dict[str, Any], ClientContext]:
    """The claims of the request's access token, checked in full (and its DPoP proof)."""
    server: OAuthServer = state.oauth
    scheme, _, token = authorization.partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "dpop") or not token.strip():
        raise Unauthorized("Bearer", "invalid_token", "an access token is required")
    token = token.strip()
    now = server.clock_now()
    found = await server.tokens.live_context(token, now)
    if found is None:
        raise Unauthorized("Bearer", "invalid_token", "the access token is not active")
    claims, ctx = found
    bound = claims.get("cnf", {}).get("jkt") if isinstance(claims.get("cnf"), dict) else None
    if bound is not None or scheme == "dpop":
        if scheme != "dpop":
            raise Unauthorized("DPoP", "invalid_token", "a DPoP-bound token needs the DPoP scheme")
        try:
            proof = await dpop.verify_proof(
                proofs[0] if len(proofs) == 1 else None, method=method,
                url=server.issuer + path, now=now, replay=server.store, access_token=token,
            )  # fmt: skip
        except dpop.InvalidDPoPProof as exc:
            raise Unauthorized("DPoP", "invalid_dpop_proof", exc.description) from exc
        if proof.jkt != bound:
            raise Unauthorized("DPoP", "invalid_token", "the proof's key is not the token's")
    return claims, ctx


async def authenticated(request: Request, path: str) -> tuple[Caller, ClientContext]:
    """The agent behind the request's access token."""
    claims, ctx = await _token(request, path)
    authorizer: Authorizer = request.app.state.authorizer
    try:
        return await authorizer.caller(claims, ctx)
    except CallerError as exc:
        raise Unauthorized("Bearer", "invalid_token", str(exc)) from exc


@router.post(
    "/authorize",
    summary="Decide one declared intent: allow, deny or approval_required",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _INTENT_SCHEMA}},
        },
    },
)
async def authorize(request: Request) -> Response:
    """Documented here; served ahead of FastAPI's routing by `decide` (see oauth_routes)."""
    return await decide(
        request.app.state, request.headers.get("authorization", ""),
        request.headers.getlist("dpop"), await request.body(), correlation_id(request.scope),
    )  # fmt: skip


async def decide(
    state: Any, authorization: str, proofs: list[str], body: bytes, cid: str
) -> Response:
    """One `/v1/authorize` request, from raw parts."""
    try:
        claims, ctx = await token_from(state, "POST", authorization, proofs, "/v1/authorize")
        authorizer: Authorizer = state.authorizer
        caller, ctx = await authorizer.caller(claims, ctx)
    except Unauthorized as exc:
        return unauthorized(exc)
    except CallerError as exc:
        return unauthorized(Unauthorized("Bearer", "invalid_token", str(exc)))
    try:
        if len(body) > MAX_BODY:
            raise IntentError(f"the body is at most {MAX_BODY} bytes")
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise IntentError("the body is not JSON") from exc
        intent, approval_id = parse_intent(parsed)
    except IntentError as exc:
        return problem(400, "invalid_intent", "Invalid intent", str(exc))
    decision = await authorizer.decide(caller, ctx, intent, approval_id, cid)
    return json_response(decision.to_json(), 200, NO_STORE)


# approvals ---------------------------------------------------------------------------------
MAX_WAIT = 60.0


async def _user_of(request: Request, claims: dict[str, Any]) -> User | None:
    """The person a token is theirs: a sign-in token (a user as `sub`, nobody acting)."""
    if claims["sub"] == claims["client_id"] or "act" in claims:
        return None
    runtime: Runtime = request.app.state.runtime
    return await runtime.delegation_store.user_by_id(str(claims["sub"]))


@router.get("/approvals/{approval_id}", summary="An approval; `wait` long-polls (≤ 60 s)")
async def get_approval(request: Request, approval_id: str, wait: float = 0.0) -> Response:
    try:
        claims = await token_claims(request, f"/v1/approvals/{approval_id}")
    except Unauthorized as exc:
        return unauthorized(exc)
    runtime: Runtime = request.app.state.runtime
    approvals: Approvals = request.app.state.approvals
    user = await _user_of(request, claims)
    approval = await approvals.get(approval_id[:64], str(claims["tenant"]))
    mine = approval.agent_id == claims["client_id"] and user is None
    if not mine and (user is None or not (set(user.roles) & set(APPROVER_ROLES)
                                          or user.id == approval.user_id)):  # fmt: skip
        raise NotFound(f"no approval {approval_id!r}")
    if wait > 0 and approval.status == "pending":
        approval = await approvals.wait(approval.id, approval.tenant_id, min(wait, MAX_WAIT))
    return json_response(approval.to_json(runtime.settings.issuer), 200, NO_STORE)


async def _decide(request: Request, approval_id: str, approve: bool) -> Response:
    verb = "approve" if approve else "deny"
    try:
        claims = await token_claims(request, f"/v1/approvals/{approval_id}/{verb}")
    except Unauthorized as exc:
        return unauthorized(exc)
    user = await _user_of(request, claims)
    if user is None:
        raise Forbidden("only a person signed in to ValetKey may decide; an agent never can")
    body = await request.body()
    reason = None
    if body:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput('the body is a JSON object, e.g. {"reason": "…"}') from exc
        if not isinstance(parsed, dict) or not isinstance(parsed.get("reason", ""), str):
            raise InvalidInput("the body is a JSON object with an optional reason")
        reason = parsed.get("reason") or None
    runtime: Runtime = request.app.state.runtime
    approvals: Approvals = request.app.state.approvals
    tenant = await runtime.identity_store.find_tenant(str(claims["tenant"]))
    decided = await approvals.decide(
        approval_id[:64], user, approve, reason[:1000] if reason else None,
        tenant.settings.self_approval_classes, correlation_id(request.scope),
    )  # fmt: skip
    return json_response(decided.to_json(runtime.settings.issuer), 200, NO_STORE)


@router.post("/approvals/{approval_id}/approve", summary="Approve (a signed-in approver)")
async def approve(request: Request, approval_id: str) -> Response:
    return await _decide(request, approval_id, True)


@router.post("/approvals/{approval_id}/deny", summary="Deny (a signed-in approver)")
async def deny(request: Request, approval_id: str) -> Response:
    return await _decide(request, approval_id, False)
