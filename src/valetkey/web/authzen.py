"""The AuthZEN Authorization API (`/access/v1/evaluation`, `/access/v1/evaluations`,
`/.well-known/authzen-configuration`) for clients holding the `pdp` right. The caller
authenticates as itself with HTTP Basic (its client id and secret)."""

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from valetkey.oauth.context import RequestMeta
from valetkey.oauth.errors import InvalidClient, OAuthError
from valetkey.oauth.server import OAuthServer
from valetkey.policy.authzen import AuthZen, AuthZenError, parse_batch, parse_evaluation
from valetkey.web.correlation import correlation_id
from valetkey.web.errors import NO_STORE, json_response, problem

router = APIRouter(tags=["authzen"])
MAX_BODY = 256 * 1024
_ENTITY = {"type": "object", "properties": {"type": {"type": "string"}, "id": {"type": "string"},
                                            "properties": {"type": "object"}}}  # fmt: skip
_EVALUATION = {
    "type": "object",
    "properties": {
        "subject": _ENTITY,
        "action": {"type": "object", "properties": {"name": {"type": "string"}}},
        "resource": _ENTITY,
        "context": {"type": "object"},
    },
}
_BATCH = {
    "type": "object",
    "properties": {**_EVALUATION["properties"], "evaluations": {"type": "array",  # type: ignore[dict-item]
                                                                "items": _EVALUATION},
                   "options": {"type": "object"}},
}  # fmt: skip


def _body_doc(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _caller(request: Request) -> tuple[Any, Response | None]:
    server: OAuthServer = request.app.state.oauth
    meta = RequestMeta(correlation_id(request.scope), request.headers.get("authorization"))
    try:
        ctx = await server.authenticate(meta)
    except InvalidClient as exc:
        response = problem(401, "invalid_client", "Unauthorized", exc.description)
        response.headers["WWW-Authenticate"] = 'Basic realm="valetkey"'
        return None, response
    except OAuthError as exc:
        return None, problem(400, exc.error, "Bad request", exc.description)
    if "pdp" not in ctx.client.rights:
        return None, problem(403, "forbidden", "Forbidden", "this client lacks the pdp right")
    return ctx, None


async def _json(request: Request) -> Any:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise AuthZenError(f"the body is at most {MAX_BODY} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise AuthZenError("the body is not JSON") from exc


@router.post("/access/v1/evaluation", summary="AuthZEN: one access evaluation",
             openapi_extra=_body_doc(_EVALUATION))  # fmt: skip
async def evaluation(request: Request) -> Response:
    ctx, refused = await _caller(request)
    if refused is not None:
        return refused
    try:
        item = parse_evaluation(await _json(request))
        authzen: AuthZen = request.app.state.authzen
        answers = await authzen.evaluate(ctx.tenant, [item], "execute_all",
                                         correlation_id(request.scope))  # fmt: skip
    except AuthZenError as exc:
        return problem(400, "invalid_request", "Invalid evaluation request", str(exc))
    return json_response(answers[0], 200, NO_STORE)


@router.post("/access/v1/evaluations", summary="AuthZEN: a batch of access evaluations",
             openapi_extra=_body_doc(_BATCH))  # fmt: skip
async def evaluations(request: Request) -> Response:
    ctx, refused = await _caller(request)
    if refused is not None:
        return refused
    try:
        items, semantic = parse_batch(await _json(request))
        authzen: AuthZen = request.app.state.authzen
        answers = await authzen.evaluate(ctx.tenant, items, semantic,
                                         correlation_id(request.scope))  # fmt: skip
    except AuthZenError as exc:
        return problem(400, "invalid_request", "Invalid evaluations request", str(exc))
    return json_response({"evaluations": answers}, 200, NO_STORE)


@router.get("/.well-known/authzen-configuration", summary="AuthZEN PDP metadata")
async def configuration(request: Request) -> Response:
    issuer = request.app.state.runtime.settings.issuer
    return json_response(
        {
            "policy_decision_point": issuer,
            "access_evaluation_endpoint": f"{issuer}/access/v1/evaluation",
            "access_evaluations_endpoint": f"{issuer}/access/v1/evaluations",
        },
        headers={"Cache-Control": "max-age=300"},
    )
