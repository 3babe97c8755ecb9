"""A token request refused before it reaches a grant (malformed body) is audited too."""

import secrets

import httpx

from tests.support.server import RunningServer


def test_malformed_token_requests_are_audited(server: RunningServer) -> None:
    cid = "cor_malformed_" + secrets.token_hex(4)
    response = httpx.post(
        server.base_url + "/oauth/token",
        content=b'{"grant_type": "client_credentials"}',
        headers={"Content-Type": "application/json", "X-Correlation-Id": cid},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    events = server.cli("audit", "search", "--tenant", "system", "--correlation-id", cid)
    assert [e["type"] for e in events] == ["token.refused"]
    assert events[0]["outcome"] == "failure"
    assert events[0]["reason"].startswith("invalid_request")
