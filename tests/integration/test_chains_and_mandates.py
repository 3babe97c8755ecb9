"""Delegation chains and mandates in token exchange (RFC 8693, RFC 9396).

A user's delegation to agent A may name sub-agents: A exchanges the user's IdP assertion,
then B exchanges A's token, then C exchanges B's. `act` nests (newest actor outermost), the
audience stays, scope and mandate only narrow, depth is bounded and no actor repeats; the
whole chain dies with the root delegation, and everything downstream of a suspended agent
dies with it. Every token is verified with PyJWT against `/jwks`.
"""

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import TenantSetup
from tests.integration.helpers import (
    assert_oauth_error,
    introspection,
    introspector_of,
    make_tenant,
    post,
    token_request,
    unsigned_jwt,
    verify,
)
from tests.support.idp import FakeIdP, running_idp
from tests.support.server import RunningServer

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TYPE = "urn:ietf:params:oauth:token-type:access_token"
USER = "mia@acme.example"
MANDATE = {
    "type": "mandate",
    "actions": ["read"],
    "locations": ["crm:deals/*"],
    "user_request": "What's the latest on the Acme deal?",
}


@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    with running_idp() as running:
        yield running


@dataclass
class Chain:
    """A tenant that trusts the IdP, the user Mia (admin: she holds every CRM scope), agent
    A (the fixture's invoice-bot, widened) and would-be sub-agents B, C, D, E."""

    tenant: TenantSetup
    idp: FakeIdP
    user_id: str
    a: dict[str, Any]
    b: dict[str, Any]
    c: dict[str, Any]
    d: dict[str, Any]
    e: dict[str, Any]

    @property
    def server(self) -> RunningServer:
        return self.tenant.server

    def delegate(
        self, *scopes: str, sub_agents: tuple[dict[str, Any], ...] = (), extra: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        args = ["delegations", "create", "--tenant", self.tenant.name, "--user", USER,
                "--agent", self.a["id"], "--resource", self.tenant.crm]  # fmt: skip
        for scope in scopes:
            args += ["--scope", scope]
        for helper in sub_agents:
            args += ["--sub-agent", helper["id"]]
        return dict(self.server.cli(*args, *extra))

    def assertion(self) -> str:
        return self.idp.assertion(USER)

    def root(self, **extra: str) -> httpx.Response:
        """A exchanges Mia's IdP assertion."""
        return exchange(self.server, self.a, self.assertion(), JWT_TYPE, **extra)

    def root_token(self, **extra: str) -> str:
        return issued(self.root(**extra))

    def verify(self, token: str) -> dict[str, Any]:
        return verify(self.server, token, self.tenant.crm)


def exchange(
    server: RunningServer, agent: dict[str, Any], subject: str, subject_type: str, **extra: str
) -> httpx.Response:
    form = {"grant_type": EXCHANGE, "subject_token": subject, "subject_token_type": subject_type,
            **extra}  # fmt: skip
    return post(server, "/oauth/token", form, auth=(agent["client_id"], agent["client_secret"]))


def issued(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["issued_token_type"] == ACCESS_TYPE
    assert body["token_type"] == "Bearer"
    return str(body["access_token"])


def details(*mandates: dict[str, Any]) -> str:
    return json.dumps(list(mandates))


@pytest.fixture
def chain(tenant: TenantSetup, idp: FakeIdP) -> Chain:
    server = tenant.server
    server.cli("issuers", "add", idp.issuer, "--tenant", tenant.name,
               "--jwks-uri", idp.jwks_uri, "--audience", "valetkey")  # fmt: skip
    mia = server.cli("users", "create", USER, "--tenant", tenant.name, "--role", "admin")
    both = ("deals:read", "deals:write")
    a = tenant.new_agent("planner", *both)
    helpers = [tenant.new_agent(name, *both) for name in ("b-agent", "c-agent", "d-agent", "e")]
    return Chain(tenant, idp, str(mia["id"]), a, *helpers)


# chains ------------------------------------------------------------------------------------
def test_a_chain_of_three_nests_act_keeps_the_audience_and_narrows(chain: Chain) -> None:
    a, b, c, d, e = chain.a, chain.b, chain.c, chain.d, chain.e
    chain.delegate("deals:read", "deals:write", sub_agents=(b, c, d))
    server = chain.server

    root = chain.root_token()
    claims_a = chain.verify(root)
    assert claims_a["sub"] == chain.user_id
    assert claims_a["client_id"] == a["id"]
    assert claims_a["act"] == {"sub": a["id"]}
    assert set(claims_a["scope"].split()) == {"deals:read", "deals:write"}

    response_b = exchange(server, b, root, ACCESS_TYPE, scope="deals:read")
    token_b = issued(response_b)
    assert response_b.json()["scope"] == "deals:read"
    claims_b = chain.verify(token_b)
    assert claims_b["sub"] == chain.user_id
    assert claims_b["client_id"] == b["id"]
    assert claims_b["act"] == {"sub": b["id"], "act": {"sub": a["id"]}}
    assert claims_b["aud"] == claims_a["aud"] == chain.tenant.crm
    assert claims_b["scope"] == "deals:read"
    assert claims_b["tenant"] == claims_a["tenant"]
    assert claims_b["exp"] <= claims_a["exp"]
    assert claims_b["jti"] != claims_a["jti"]

    # C may write in general, but B's token only reads: asking more is invalid_scope.
    assert_oauth_error(
        exchange(server, c, token_b, ACCESS_TYPE, scope="deals:write"), 400, "invalid_scope"
    )
    assert_oauth_error(
        exchange(server, c, token_b, ACCESS_TYPE, scope="deals:read deals:write"),
        400,
        "invalid_scope",
    )
    token_c = issued(exchange(server, c, token_b, ACCESS_TYPE, resource=chain.tenant.crm))
    claims_c = chain.verify(token_c)
    assert claims_c["sub"] == chain.user_id
    assert claims_c["client_id"] == c["id"]
    assert claims_c["act"] == {"sub": c["id"], "act": {"sub": b["id"], "act": {"sub": a["id"]}}}
    assert claims_c["aud"] == chain.tenant.crm
    assert claims_c["scope"] == "deals:read"  # absent scope: what the subject token held
    assert claims_c["exp"] <= claims_b["exp"]

    # D is a named sub-agent, but a fourth actor is one too many (default max depth 3).
    body = assert_oauth_error(exchange(server, d, token_c, ACCESS_TYPE), 400, "invalid_grant")
    assert "3" in body["error_description"], body
    # A third actor is fine for D: the depth, not D, was the problem.
    claims_d = chain.verify(issued(exchange(server, d, token_b, ACCESS_TYPE)))
    assert claims_d["act"] == {"sub": d["id"], "act": {"sub": b["id"], "act": {"sub": a["id"]}}}

    # An actor may appear only once: A taking back B's token, or B its own.
    assert_oauth_error(exchange(server, a, token_b, ACCESS_TYPE), 400, "invalid_grant")
    assert_oauth_error(exchange(server, b, token_b, ACCESS_TYPE), 400, "invalid_grant")
    assert_oauth_error(exchange(server, a, root, ACCESS_TYPE), 400, "invalid_grant")

    # E was never named in Mia's delegation.
    body = assert_oauth_error(exchange(server, e, root, ACCESS_TYPE), 400, "invalid_grant")
    assert "consent" in body["error_description"] or "sub-agent" in body["error_description"]
    assert_oauth_error(exchange(server, e, token_b, ACCESS_TYPE), 400, "invalid_grant")


def test_a_chained_token_keeps_its_audience(chain: Chain) -> None:
    chain.delegate("deals:read", sub_agents=(chain.b,))
    mail = f"https://mail-{chain.tenant.name}.example"
    chain.server.cli("resources", "create", mail, "--tenant", chain.tenant.name,
                     "--scope", "mail:read")  # fmt: skip
    root = chain.root_token()
    for extra in (
        {"resource": mail},
        {"audience": mail},
        {"audience": "https://elsewhere.example"},
    ):
        response = exchange(chain.server, chain.b, root, ACCESS_TYPE, **extra)
        assert_oauth_error(response, 400, "invalid_target")
    assert chain.verify(issued(exchange(chain.server, chain.b, root, ACCESS_TYPE)))["aud"] == (
        chain.tenant.crm
    )


def test_a_sub_agent_named_for_another_resource_may_not_take_over(chain: Chain) -> None:
    # Mia names B only in a delegation for another resource; A's CRM token stays A's.
    mail = f"https://mail-{chain.tenant.name}.example"
    chain.server.cli("resources", "create", mail, "--tenant", chain.tenant.name,
                     "--scope", "mail:read")  # fmt: skip
    chain.delegate("deals:read")
    chain.server.cli("delegations", "create", "--tenant", chain.tenant.name, "--user", USER,
                     "--agent", chain.a["id"], "--resource", mail, "--scope", "mail:read",
                     "--sub-agent", chain.b["id"])  # fmt: skip
    root = chain.root_token(resource=chain.tenant.crm)
    assert_oauth_error(exchange(chain.server, chain.b, root, ACCESS_TYPE), 400, "invalid_grant")


def _active(chain: Chain, token: str) -> bool:
    return bool(introspection(chain.server, introspector_of(chain.tenant), token)["active"])


def test_revoking_the_root_delegation_kills_the_whole_chain(chain: Chain) -> None:
    made = chain.delegate("deals:read", sub_agents=(chain.b, chain.c))
    root = chain.root_token()
    token_b = issued(exchange(chain.server, chain.b, root, ACCESS_TYPE))
    token_c = issued(exchange(chain.server, chain.c, token_b, ACCESS_TYPE))
    seen = introspection(chain.server, introspector_of(chain.tenant), token_c)
    assert seen["active"] is True
    assert seen["client_id"] == chain.c["id"]
    assert seen["sub"] == chain.user_id
    assert seen["act"] == {"sub": chain.c["id"], "act": {"sub": chain.b["id"],
                           "act": {"sub": chain.a["id"]}}}  # fmt: skip
    assert all(_active(chain, t) for t in (root, token_b, token_c))

    chain.server.cli("delegations", "revoke", made["id"], "--tenant", chain.tenant.name)

    assert not any(_active(chain, t) for t in (root, token_b, token_c))
    # and a dead token exchanges for nothing
    response = exchange(chain.server, chain.c, token_b, ACCESS_TYPE)
    assert_oauth_error(response, 400, "invalid_request")


def test_suspending_a_middle_agent_kills_what_is_downstream_of_it(chain: Chain) -> None:
    chain.delegate("deals:read", sub_agents=(chain.b, chain.c))
    root = chain.root_token()
    token_b = issued(exchange(chain.server, chain.b, root, ACCESS_TYPE))
    token_c = issued(exchange(chain.server, chain.c, token_b, ACCESS_TYPE))
    assert all(_active(chain, t) for t in (root, token_b, token_c))

    chain.server.cli("agents", "suspend", chain.b["id"])

    assert _active(chain, root)  # upstream of B: untouched
    assert not _active(chain, token_b)
    assert not _active(chain, token_c)
    assert_oauth_error(
        exchange(chain.server, chain.c, token_b, ACCESS_TYPE), 400, "invalid_request"
    )
    response = exchange(chain.server, chain.b, root, ACCESS_TYPE)
    assert_oauth_error(response, 401, "invalid_client")


def test_a_chain_issued_before_a_suspension_stays_dead_after_resume(chain: Chain) -> None:
    """Like the suspended agent's own tokens (its token generation changes): what B handed
    on before the suspension does not come back when B is resumed."""
    chain.delegate("deals:read", sub_agents=(chain.b, chain.c))
    token_b = issued(exchange(chain.server, chain.b, chain.root_token(), ACCESS_TYPE))
    token_c = issued(exchange(chain.server, chain.c, token_b, ACCESS_TYPE))
    chain.server.cli("agents", "suspend", chain.b["id"])
    suspended = time.time()
    chain.server.cli("agents", "resume", chain.b["id"])
    assert not _active(chain, token_b)
    assert not _active(chain, token_c)
    # a chain built after the resume stands (`iat` counts whole seconds: start a new one)
    time.sleep(max(0.0, math.ceil(suspended) - time.time()))
    token_b2 = issued(exchange(chain.server, chain.b, chain.root_token(), ACCESS_TYPE))
    assert _active(chain, issued(exchange(chain.server, chain.c, token_b2, ACCESS_TYPE)))


# actor tokens ------------------------------------------------------------------------------
def test_actor_tokens(chain: Chain) -> None:
    chain.delegate("deals:read")
    server, a = chain.server, chain.a
    own = issued_cc(chain, a)
    others = issued_cc(chain, chain.b)
    for extra in ({"actor_token": own}, {"actor_token_type": ACCESS_TYPE}):
        assert_oauth_error(chain.root(**extra), 400, "invalid_request")
    assert_oauth_error(
        chain.root(actor_token=own, actor_token_type=JWT_TYPE), 400, "invalid_request"
    )
    response = chain.root(actor_token=own, actor_token_type=ACCESS_TYPE)
    claims = chain.verify(issued(response))
    assert claims["act"] == {"sub": a["id"]}
    assert claims["sub"] == chain.user_id
    for bad in (others, "garbage", chain.root_token()):  # another's, junk, not A's own
        response = chain.root(actor_token=bad, actor_token_type=ACCESS_TYPE)
        assert_oauth_error(response, 400, "invalid_request")
    server.cli("agents", "suspend", chain.b["id"])  # nothing to do with A: A still works
    assert chain.verify(issued(chain.root(actor_token=issued_cc(chain, a),
                                          actor_token_type=ACCESS_TYPE)))  # fmt: skip


def issued_cc(chain: Chain, agent: dict[str, Any]) -> str:
    response = token_request(chain.server, agent, chain.tenant.crm)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


# ValetKey tokens as the subject ------------------------------------------------------------
def test_valetkey_tokens_that_name_no_user_of_this_tenant(chain: Chain) -> None:
    chain.delegate("deals:read", sub_agents=(chain.b,))
    server = chain.server
    # an agent's own token names no user
    for agent in (chain.a, chain.b):
        response = exchange(server, chain.b, issued_cc(chain, agent), ACCESS_TYPE)
        assert_oauth_error(response, 400, "invalid_request")
    # a delegated token from another tenant (valid there, signed by this server)
    other = make_tenant(server)
    server.cli("issuers", "add", chain.idp.issuer, "--tenant", other.name,
               "--jwks-uri", chain.idp.jwks_uri, "--audience", "valetkey")  # fmt: skip
    server.cli("users", "create", USER, "--tenant", other.name, "--role", "admin")
    server.cli("delegations", "create", "--tenant", other.name, "--user", USER,
               "--agent", other.agent["id"], "--scope", "deals:read")  # fmt: skip
    foreign = issued(exchange(server, other.agent, chain.assertion(), JWT_TYPE))
    assert verify(server, foreign, other.crm)["tenant"] != chain.tenant.tenant["id"]
    for agent in (chain.a, chain.b):
        assert_oauth_error(exchange(server, agent, foreign, ACCESS_TYPE), 400, "invalid_request")
    # garbage, a token not signed by ValetKey, and an IdP assertion typed as access token
    forged = unsigned_jwt({"alg": "none", "typ": "at+jwt"},
                          {"iss": server.issuer, "sub": chain.user_id, "aud": chain.tenant.crm,
                           "client_id": chain.a["id"], "act": {"sub": chain.a["id"]}})  # fmt: skip
    for junk in ("garbage", "a.b.c", forged, chain.assertion()):
        assert_oauth_error(exchange(server, chain.b, junk, ACCESS_TYPE), 400, "invalid_request")
    # and a ValetKey token typed as an IdP assertion
    assert_oauth_error(
        exchange(server, chain.b, chain.root_token(), JWT_TYPE), 400, "invalid_request"
    )


# mandates ----------------------------------------------------------------------------------
def test_a_mandate_travels_in_the_token_and_the_response(chain: Chain) -> None:
    chain.delegate("deals:read")
    response = chain.root(authorization_details=details(MANDATE))
    token = issued(response)
    assert response.json()["authorization_details"] == [MANDATE]
    assert chain.verify(token)["authorization_details"] == [MANDATE]
    seen = introspection(chain.server, introspector_of(chain.tenant), token)
    assert seen["authorization_details"] == [MANDATE]
    # no mandate asked, no template: no claim
    plain = chain.root()
    assert "authorization_details" not in plain.json()
    assert "authorization_details" not in chain.verify(issued(plain))


MALFORMED = {
    "not json": "{not json",
    "an object, not an array": json.dumps(MANDATE),
    "null": "null",
    "a string": '"mandate"',
    "an array of non-objects": "[1]",
    "unknown type": details({**MANDATE, "type": "payment_initiation"}),
    "no type": details({k: v for k, v in MANDATE.items() if k != "type"}),
    "empty actions": details({**MANDATE, "actions": []}),
    "no locations": details({k: v for k, v in MANDATE.items() if k != "locations"}),
    "actions not a list": details({**MANDATE, "actions": "read"}),
    "non-string action": details({**MANDATE, "actions": [1]}),
    "non-string location": details({**MANDATE, "locations": [None]}),
    "empty action": details({**MANDATE, "actions": [" "]}),
    "unknown field": details({**MANDATE, "amount": 100}),
    "non-string user_request": details({**MANDATE, "user_request": ["x"]}),
    "two mandates": details(MANDATE, MANDATE),
    "huge": details({**MANDATE, "user_request": "x" * 20_000}),
    "deeply nested": "[" * 5000 + "]" * 5000,
}


def test_malformed_authorization_details_are_refused_never_a_500(chain: Chain) -> None:
    chain.delegate("deals:read", sub_agents=(chain.b,))
    root = chain.root_token()
    for name, raw in MALFORMED.items():
        for response in (
            chain.root(authorization_details=raw),
            exchange(chain.server, chain.b, root, ACCESS_TYPE, authorization_details=raw),
        ):
            assert response.status_code == 400, (name, response.text)
            assert_oauth_error(response, 400, "invalid_authorization_details")


def test_a_mandate_template_bounds_what_may_be_asked(chain: Chain) -> None:
    chain.delegate("deals:read", extra=("--mandate-action", "read",
                                        "--mandate-location", "crm:deals/*"))  # fmt: skip
    template = {"type": "mandate", "actions": ["read"], "locations": ["crm:deals/*"]}
    # nothing asked: the template is the mandate
    response = chain.root()
    assert response.json()["authorization_details"] == [template]
    assert chain.verify(issued(response))["authorization_details"] == [template]
    # inside the template: taken as asked
    for inside in (
        {**MANDATE, "locations": ["crm:deals/42"]},
        {**MANDATE, "locations": ["crm:deals/4*", "crm:deals/7"]},
        {"type": "mandate", "actions": ["read"], "locations": ["crm:deals/*"]},
    ):
        token = issued(chain.root(authorization_details=details(inside)))
        assert chain.verify(token)["authorization_details"] == [inside]
    # outside it: refused
    for outside in (
        {**MANDATE, "actions": ["delete"]},
        {**MANDATE, "actions": ["read", "write"]},
        {**MANDATE, "actions": ["*"]},
        {**MANDATE, "locations": ["crm:contacts/1"]},
        {**MANDATE, "locations": ["crm:*"]},
        {**MANDATE, "locations": ["crm:deals/42", "mail:inbox"]},
    ):
        response = chain.root(authorization_details=details(outside))
        assert_oauth_error(response, 400, "invalid_authorization_details")


def test_a_sub_agents_mandate_only_narrows_and_is_inherited(chain: Chain) -> None:
    chain.delegate("deals:read", sub_agents=(chain.b, chain.c))
    server, b, c = chain.server, chain.b, chain.c
    root = chain.root_token(authorization_details=details(MANDATE))

    # absent: inherited as is
    inherited = issued(exchange(server, b, root, ACCESS_TYPE))
    assert chain.verify(inherited)["authorization_details"] == [MANDATE]
    # narrower: taken, keeping the user's words
    narrow = {"type": "mandate", "actions": ["read"], "locations": ["crm:deals/42"]}
    response = exchange(server, b, root, ACCESS_TYPE, authorization_details=details(narrow))
    token_b = issued(response)
    expected = {**narrow, "user_request": MANDATE["user_request"]}
    assert response.json()["authorization_details"] == [expected]
    assert chain.verify(token_b)["authorization_details"] == [expected]
    # wider than the subject token's: refused
    for wider in (
        {**MANDATE, "actions": ["read", "write"]},
        {**MANDATE, "locations": ["crm:*"]},
    ):
        response = exchange(server, b, root, ACCESS_TYPE, authorization_details=details(wider))
        assert_oauth_error(response, 400, "invalid_authorization_details")
    # C under B: A's mandate is now wider than what B holds
    response = exchange(server, c, token_b, ACCESS_TYPE, authorization_details=details(MANDATE))
    assert_oauth_error(response, 400, "invalid_authorization_details")
    assert chain.verify(issued(exchange(server, c, token_b, ACCESS_TYPE)))[
        "authorization_details"
    ] == [expected]


def test_a_sub_agent_may_add_a_mandate_where_there_was_none(chain: Chain) -> None:
    chain.delegate("deals:read", sub_agents=(chain.b,))
    root = chain.root_token()
    response = exchange(chain.server, chain.b, root, ACCESS_TYPE,
                        authorization_details=details(MANDATE))  # fmt: skip
    assert chain.verify(issued(response))["authorization_details"] == [MANDATE]


def test_only_the_star_is_a_wildcard(chain: Chain) -> None:
    """`?` is a plain character: a template or a caller's `deals/4?` does not cover the
    wider `deals/4*` (it would if `?` matched the `*` as any one character)."""
    template = ("--mandate-action", "read", "--mandate-location", "crm:deals/4?")
    chain.delegate("deals:read", sub_agents=(chain.b,), extra=template)
    wider = {"type": "mandate", "actions": ["read"], "locations": ["crm:deals/4*"]}
    same = {"type": "mandate", "actions": ["read"], "locations": ["crm:deals/4?"]}
    response = chain.root(authorization_details=details(wider))
    assert_oauth_error(response, 400, "invalid_authorization_details")
    root = chain.root_token(authorization_details=details(same))
    assert chain.verify(root)["authorization_details"] == [same]
    response = exchange(chain.server, chain.b, root, ACCESS_TYPE,
                        authorization_details=details(wider))  # fmt: skip
    assert_oauth_error(response, 400, "invalid_authorization_details")
    for action in ("rea?", "re*"):  # nor for actions
        asked = {**same, "actions": [action]}
        response = chain.root(authorization_details=details(asked))
        assert_oauth_error(response, 400, "invalid_authorization_details")
