"""`exchange()`: the agent trades a user's IdP assertion for a delegated token (RFC 8693)
carrying the task's mandate (RFC 9396), then acts with it: the decision point allows what
the mandate covers and denies the rest as a suspected injection."""

from collections.abc import Iterator
from typing import Any

import pytest

from tests.sdk.conftest import World
from tests.support.idp import FakeIdP, running_idp
from valetkey.sdk import Denied, Intent, OAuthError, TokenVerifier

USER = "mia@acme.example"
MANDATE = {"actions": ["read"], "locations": ["crm:deals/*"],
           "user_request": "What's the latest on the Acme deal?"}  # fmt: skip
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


@pytest.fixture(scope="module")
def idp(world: World) -> Iterator[FakeIdP]:
    with running_idp() as running:
        world.server.cli("issuers", "add", running.issuer, "--tenant", world.name,
                         "--jwks-uri", running.jwks_uri, "--audience", "valetkey")  # fmt: skip
        yield running


@pytest.fixture(scope="module")
def mia(world: World, idp: FakeIdP) -> dict[str, Any]:
    return dict(world.server.cli("users", "create", USER, "--tenant", world.name,
                                 "--role", "admin"))  # fmt: skip


def test_exchange_with_a_mandate_then_act_within_it(
    world: World, idp: FakeIdP, mia: dict[str, Any]
) -> None:
    agent = world.agent()
    world.server.cli("delegations", "create", "--tenant", world.name, "--user", USER,
                     "--agent", agent["id"], "--resource", world.crm,
                     "--scope", "deals:read")  # fmt: skip
    client = world.client(agent)
    token = client.exchange(idp.assertion(USER), scope="deals:read", mandate=MANDATE)
    assert token.issued_token_type == ACCESS_TOKEN_TYPE
    assert token.scopes == ("deals:read",) and token.resource == world.crm
    assert token.authorization_details == ({**MANDATE, "type": "mandate"},)

    verified = TokenVerifier(world.issuer, world.crm).verify(token.value)
    assert verified.sub == mia["id"] and verified.client_id == agent["id"]
    assert verified.act == [agent["id"]] and verified.on_behalf_of_user
    assert verified.agent_id == agent["id"]
    assert verified.mandate is not None and verified.mandate["locations"] == ["crm:deals/*"]

    read = client.authorize(Intent("crm:deals.read", "crm:deals/1"), token=token)
    assert read.allowed
    with pytest.raises(Denied) as outside:
        client.authorize(Intent("crm:deals.read", "crm:contacts/1"), token=token)
    assert outside.value.code == "intent_outside_mandate"
    (flagged,) = [e for e in world.events("decision.made", agent)
                  if e["data"].get("decision") == "deny"]  # fmt: skip
    assert "suspected_injection" in str(flagged)


def test_no_delegation_no_exchange(world: World, idp: FakeIdP, mia: dict[str, Any]) -> None:
    client = world.client(world.agent())
    with pytest.raises(OAuthError) as refused:
        client.exchange(idp.assertion(USER), scope="deals:read")
    assert refused.value.error == "invalid_grant"
