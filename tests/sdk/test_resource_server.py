"""A resource server built on the SDK: `require_token` in a tiny FastAPI app and
`TokenMiddleware` on a plain one, called in-process (httpx `ASGITransport`) by the SDK's
own agent client with tokens from the live ValetKey — Bearer and DPoP. And `AuthZenClient`
asking the same ValetKey's policies."""

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from tests.sdk.conftest import World
from valetkey.sdk import (
    AsyncAuthZenClient,
    AuthZenClient,
    ProblemError,
    TokenMiddleware,
    TokenVerifier,
    VerifiedToken,
    require_token,
)

BASE = "http://api.acme.example"


def make_app(verifier: TokenVerifier) -> FastAPI:
    app = FastAPI()
    app.state.token_verifier = verifier

    @app.get("/deals/{deal}")
    async def read(deal: str, token: VerifiedToken = Depends(require_token("deals:read"))) -> Any:
        return {"deal": deal, "sub": token.sub, "dpop": token.dpop_bound}

    @app.delete("/deals/{deal}")
    async def delete(
        deal: str, token: VerifiedToken = Depends(require_token(["deals:write"]))
    ) -> Any:
        return {"deleted": deal}

    return app


def call(app: Any, auth: httpx.Auth | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, auth=auth)


async def test_require_token(world: World) -> None:
    reader = await asyncio.to_thread(world.agent, "deals:read")  # the CLI: one at a time
    writer = await asyncio.to_thread(world.agent)
    app = make_app(TokenVerifier(world.issuer, world.crm))
    async with call(app) as anonymous:
        nothing = await anonymous.get("/deals/1")
        assert nothing.status_code == 401
        challenge = nothing.headers["www-authenticate"]
        assert challenge.startswith(f'Bearer realm="{world.crm}"') and "DPoP" in challenge
        assert "error=" not in challenge  # RFC 6750 §3.1: no error code without a token
        junk = await anonymous.get("/deals/1", headers={"Authorization": "Bearer junk"})
        assert junk.status_code == 401 and 'error="invalid_token"' in junk.headers[
            "www-authenticate"]  # fmt: skip
        basic = await anonymous.get("/deals/1", headers={"Authorization": "Basic eDp5"})
        assert basic.status_code == 400
    async with world.async_client(reader) as agent, call(app, agent.auth) as http:
        ok = await http.get("/deals/1")
        assert ok.status_code == 200 and ok.json() == {"deal": "1", "sub": reader["id"],
                                                       "dpop": False}  # fmt: skip
        forbidden = await http.delete("/deals/1")
        assert forbidden.status_code == 403
        www = forbidden.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in www and 'scope="deals:write"' in www
    async with world.async_client(writer, dpop=True) as agent, call(app, agent.auth) as http:
        bound = await http.delete("/deals/2")  # DPoP scheme, proof for this URL
        assert bound.status_code == 200, bound.text
        assert (await http.get("/deals/2")).json()["dpop"] is True
        token = await agent.token()
    async with call(app) as anonymous:  # the bound token as a bearer token: refused
        stolen = await anonymous.get("/deals/1", headers={"Authorization": f"Bearer {token.value}"})
        assert stolen.status_code == 401 and stolen.headers["www-authenticate"].startswith("DPoP")


async def test_token_middleware(world: World) -> None:
    agent = await asyncio.to_thread(world.agent)
    verifier = TokenVerifier(world.issuer, world.crm)
    app = FastAPI()

    @app.get("/whoami")
    async def whoami(request: Request) -> Any:
        token = request.state.token
        return {"client_id": token.client_id if token else None}

    @app.get("/strict")
    async def strict(token: VerifiedToken = Depends(require_token("deals:read"))) -> Any:
        return {"client_id": token.client_id}  # reuses the middleware's verification

    app.add_middleware(TokenMiddleware, verifier=verifier)
    async with call(app) as anonymous:
        assert (await anonymous.get("/whoami")).json() == {"client_id": None}
        refused = await anonymous.get("/whoami", headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"
    async with world.async_client(agent, dpop=True) as client, call(app, client.auth) as http:
        assert (await http.get("/whoami")).json() == {"client_id": agent["id"]}
        strict_answer = await http.get("/strict")  # one proof, verified once
        assert strict_answer.status_code == 200, strict_answer.text
    required = TokenMiddleware(app, verifier, required=True)
    async with call(required) as anonymous:
        assert (await anonymous.get("/whoami")).status_code == 401


def test_authzen(world: World) -> None:
    pep = world.server.cli("clients", "create", "pep", "--tenant", world.name, "--right", "pdp")
    agent = world.agent()
    subject = {"type": "agent", "id": agent["id"]}
    deal = {"type": "Resource", "id": "crm:deals/1"}
    with AuthZenClient(world.issuer, pep["client_id"], pep["client_secret"]) as pdp:
        assert pdp.evaluate(subject, "read", deal) is True
        assert pdp.evaluate(subject, {"name": "delete"}, deal, {"channel": "api"}) is False
    wrong = AuthZenClient(world.issuer, pep["client_id"], "wrong")
    with wrong, pytest.raises(ProblemError) as refused:
        wrong.evaluate(subject, "read", deal)
    assert refused.value.status == 401

    async def asynchronous() -> bool:
        async with AsyncAuthZenClient(world.issuer, pep["client_id"], pep["client_secret"]) as c:
            return await c.evaluate(subject, "read", deal)

    assert asyncio.run(asynchronous()) is True
