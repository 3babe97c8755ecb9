"""A resource server (FastAPI) that accepts ValetKey's access tokens, Bearer or DPoP.

    export VALETKEY_ISSUER=http://127.0.0.1:8400
    export RESOURCE_AUDIENCE=https://crm.acme.example   # the resource registered in ValetKey
    uvicorn examples.resource_server:app --port 8500    # or: python examples/resource_server.py

Tokens are checked offline against ValetKey's published keys (`TokenVerifier`): signature,
issuer, audience, expiry, scopes, and for DPoP-bound tokens the proof. The verifier is
built at startup from the environment and found by `require_token` in `app.state`.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException

from valetkey.sdk import TokenVerifier, VerifiedToken, require_token

DEALS: dict[str, dict[str, Any]] = {
    "42": {"id": "42", "name": "Acme renewal", "stage": "negotiation", "amount": 120000},
}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.token_verifier = TokenVerifier(
        os.environ["VALETKEY_ISSUER"], os.environ["RESOURCE_AUDIENCE"]
    )
    yield


app = FastAPI(title="Acme CRM (example)", lifespan=lifespan)


@app.get("/deals/{deal_id}")
async def read_deal(
    deal_id: str, token: VerifiedToken = Depends(require_token("deals:read"))
) -> dict[str, Any]:
    deal = DEALS.get(deal_id)
    if deal is None:
        raise HTTPException(404, "no such deal")
    # Who asks: the agent, and the user it acts for when the token is delegated.
    on_behalf_of = token.sub if token.on_behalf_of_user else None
    return {**deal, "read_by": token.agent_id, "on_behalf_of": on_behalf_of}


@app.patch("/deals/{deal_id}")
async def update_deal(
    deal_id: str,
    changes: dict[str, Any],
    token: VerifiedToken = Depends(require_token("deals:write")),
) -> dict[str, Any]:
    deal = DEALS.get(deal_id)
    if deal is None:
        raise HTTPException(404, "no such deal")
    deal.update({k: v for k, v in changes.items() if k in ("stage", "amount")})
    return deal


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8500)
