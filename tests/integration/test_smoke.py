import httpx
import jwt

from tests.conftest import TenantSetup


def test_agent_token_verifies_with_pyjwt(tenant: TenantSetup) -> None:
    server = tenant.server
    agent = tenant.agent
    response = httpx.post(
        server.base_url + "/oauth/token",
        data={"grant_type": "client_credentials", "resource": tenant.crm},
        auth=(agent["client_id"], agent["client_secret"]),
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    token = response.json()["access_token"]
    jwks = jwt.PyJWKClient(server.base_url + "/jwks")
    key = jwks.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key, algorithms=["ES256"], audience=tenant.crm, issuer=server.issuer)
    assert claims["sub"] == agent["id"]
    assert claims["scope"] == "deals:read"
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
