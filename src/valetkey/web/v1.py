"""`/v1` — ValetKey's own API. Errors are RFC 9457 problem+json; a missing or bad token is
401 with `WWW-Authenticate` (RFC 6750 §3, RFC 9449 §7.1).

`POST /v1/authorize`: the agent presents its token (Bearer, or DPoP with a proof whose
`ath` binds it to the token) and the intent; a deny is a normal 200 answer with reasons.
"""

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from valetkey.oauth import dpop
from valetkey.oauth.context import ClientContext
from valetkey.oauth.server import OAuthServer
from valetkey.policy.authorizer import Authorizer, CallerError
from valetkey.policy.decision import Caller
from valetkey.policy.intent import IntentError, parse_intent
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


def _unauthorized(exc: Unauthorized) -> Response:
    response = problem(401, exc.error, "Unauthorized", exc.description)
    challenge = f'{exc.scheme} realm="valetkey", error="{exc.error}"'
    if exc.scheme == "DPoP":
        challenge += f', algs="{" ".join(dpop.DPOP_ALGORITHMS)}"'
    response.headers["WWW-Authenticate"] = challenge
    return response


async def authenticated(request: Request, path: str) -> tuple[Caller, ClientContext]:
    """The agent behind the request's access token, checked in full (and its DPoP proof)."""
    server: OAuthServer = request.app.state.oauth
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "dpop") or not token.strip():
        raise Unauthorized("Bearer", "invalid_token", "an access token is required")
    token = token.strip()
    now = server.clock_now()
    claims = await server.tokens.live(token, now)
    if claims is None:
        raise Unauthorized("Bearer", "invalid_token", "the access token is not active")
    bound = claims.get("cnf", {}).get("jkt") if isinstance(claims.get("cnf"), dict) else None
    if bound is not None or scheme == "dpop":
        proofs = request.headers.getlist("dpop")
        if scheme != "dpop":
            raise Unauthorized("DPoP", "invalid_token", "a DPoP-bound token needs the DPoP scheme")
        try:
            proof = await dpop.verify_proof(
                proofs[0] if len(proofs) == 1 else None, method=request.method,
                url=server.issuer + path, now=now, replay=server.store, access_token=token,
            )  # fmt: skip
        except dpop.InvalidDPoPProof as exc:
            raise Unauthorized("DPoP", "invalid_dpop_proof", exc.description) from exc
        if proof.jkt != bound:
            raise Unauthorized("DPoP", "invalid_token", "the proof's key is not the token's")
    authorizer: Authorizer = request.app.state.authorizer
    try:
        return await authorizer.caller(claims)
    except CallerError as exc:
        raise Unauthorized("Bearer", "invalid_token", str(exc)) from exc


async def _json_body(request: Request) -> Any:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise IntentError(f"the body is at most {MAX_BODY} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IntentError("the body is not JSON") from exc


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
    try:
        caller, ctx = await authenticated(request, "/v1/authorize")
    except Unauthorized as exc:
        return _unauthorized(exc)
    try:
        intent, _approval = parse_intent(await _json_body(request))
    except IntentError as exc:
        return problem(400, "invalid_intent", "Invalid intent", str(exc))
    authorizer: Authorizer = request.app.state.authorizer
    decision = await authorizer.decide(caller, ctx, intent, correlation_id(request.scope))
    return json_response(decision.to_json(), 200, NO_STORE)
