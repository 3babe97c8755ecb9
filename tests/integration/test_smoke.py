import httpx
import jwt

from tests.conftest import TenantSetup
from tests.support.server import RunningServer


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


def test_the_server_runs_on_the_backend_the_test_is_for(
    server: RunningServer, backend: str
) -> None:
    """A guard on the fixtures themselves: a test marked [postgresql] talks to PostgreSQL."""
    url = server.env["VALETKEY_DATABASE_URL"]
    assert url.startswith({"sqlite": "sqlite+", "postgresql": "postgresql+"}[backend]), url
