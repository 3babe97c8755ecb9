"""Signing key rotation seen from a resource server: PyJWT against /jwks.

`keys rotate` changes the shared session server's signing key; every assertion here holds
whichever key other tests left active, and the EdDSA test puts ES256 back.
"""

from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from tests.conftest import TenantSetup
from tests.integration.helpers import access_token, cli_error, introspection, jwks, verify
from tests.support.server import RunningServer


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def published(server: RunningServer) -> set[str]:
    return {k["kid"] for k in jwks(server)["keys"]}


def test_rotation_keeps_old_tokens_valid_and_signs_with_the_new_kid(tenant: TenantSetup) -> None:
    server = tenant.server
    rs = tenant.introspector()
    old_token = access_token(tenant)
    old_kid = kid_of(old_token)
    before = published(server)
    assert old_kid in before

    rotated = server.cli("keys", "rotate")
    assert rotated["previous_kid"] == old_kid
    assert rotated["kid"] != old_kid
    assert rotated["alg"] == "ES256"
    # the new signing key was published before it signed anything (verifiers' caches know it)
    assert rotated["kid"] in before

    new_token = access_token(tenant)
    assert kid_of(new_token) == rotated["kid"]
    after = published(server)
    assert {old_kid, rotated["kid"]} <= after
    assert len(after - before) == 1  # the next key, published ahead of time

    for token in (old_token, new_token):
        claims = verify(server, token, tenant.crm)
        assert claims["sub"] == tenant.agent["id"]
        assert introspection(server, rs, token)["active"] is True

    listed = {k["kid"]: k for k in server.cli("keys", "list")}
    assert listed[old_kid]["status"] == "retired"
    assert listed[old_kid]["published_until"] is not None
    assert listed[rotated["kid"]]["status"] == "active"
    assert [k for k in listed.values() if k["status"] == "next"]


def test_tokens_survive_two_rotations(tenant: TenantSetup) -> None:
    server = tenant.server
    rs = tenant.introspector()
    first = access_token(tenant)
    server.cli("keys", "rotate")
    second = access_token(tenant)
    server.cli("keys", "rotate")
    third = access_token(tenant)
    assert len({kid_of(first), kid_of(second), kid_of(third)}) == 3
    assert {kid_of(first), kid_of(second), kid_of(third)} <= published(server)
    for token in (first, second, third):
        verify(server, token, tenant.crm)
        assert introspection(server, rs, token)["active"] is True


@pytest.fixture
def back_to_es256(server: RunningServer) -> Iterator[None]:
    yield
    server.cli("keys", "rotate", "--alg", "ES256")


def test_rotation_to_eddsa(tenant: TenantSetup, back_to_es256: None) -> None:
    server = tenant.server
    rs = tenant.introspector()
    es_token = access_token(tenant)
    rotated = server.cli("keys", "rotate", "--alg", "EdDSA")
    assert rotated["alg"] == "EdDSA"
    ed_token = access_token(tenant)
    header = jwt.get_unverified_header(ed_token)
    assert header == {"alg": "EdDSA", "typ": "at+jwt", "kid": rotated["kid"]}
    key: dict[str, Any] = next(k for k in jwks(server)["keys"] if k["kid"] == rotated["kid"])
    assert key["kty"] == "OKP"
    assert key["crv"] == "Ed25519"
    assert "d" not in key
    for token in (es_token, ed_token):
        verify(server, token, tenant.crm)
        assert introspection(server, rs, token)["active"] is True


def test_unknown_algorithm_is_refused(server: RunningServer) -> None:
    before = published(server)
    for alg in ("HS256", "none", "RS256"):
        cli_error(server, "keys", "rotate", "--alg", alg, "--json")
    assert published(server) == before
