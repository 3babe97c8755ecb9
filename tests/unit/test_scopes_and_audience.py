import pytest
from hypothesis import given
from hypothesis import strategies as st

from valetkey.identity.models import Resource, TenantSettings, valid_resource_uri
from valetkey.identity.scopes import (
    check_acyclic,
    closure,
    conventional_implications,
    parse_scope_param,
    valid_scope,
)
from valetkey.oauth import audience
from valetkey.oauth.errors import InvalidScope, InvalidTarget

CRM = Resource(
    "res_1",
    "ten_1",
    "https://crm.example",
    ("deals:read", "deals:write", "deals:admin"),
    {"deals:admin": ("deals:write",), "deals:write": ("deals:read",)},
    0.0,
)
MAIL = Resource("res_2", "ten_1", "https://mail.example", ("mail:read", "mail:send"), {}, 0.0)
ISSUER = "http://127.0.0.1:8400"


def test_conventional_ladder() -> None:
    implied = conventional_implications(["deals:read", "deals:write", "deals:admin", "x:read"])
    assert implied == {"deals:admin": ("deals:write",), "deals:write": ("deals:read",)}
    assert conventional_implications(["deals:admin", "deals:read"]) == {
        "deals:admin": ("deals:read",)
    }


def test_closure_is_transitive() -> None:
    assert closure(["deals:admin"], CRM.implies) == {"deals:admin", "deals:write", "deals:read"}
    assert closure(["deals:read"], CRM.implies) == {"deals:read"}


def test_cycles_are_refused() -> None:
    with pytest.raises(ValueError, match="cycle"):
        check_acyclic({"a": ["b"], "b": ["a"]})
    check_acyclic({"a": ["b"], "b": ["c"]})


def test_scope_syntax() -> None:
    assert valid_scope("deals:read")
    assert not valid_scope("has space")
    assert not valid_scope('quote"')
    assert not valid_scope("a>b")
    assert not valid_scope("")
    assert parse_scope_param("a  b a") == ["a", "b"]


def test_resource_uri_rules() -> None:
    assert valid_resource_uri("https://crm.example/api")
    assert valid_resource_uri("urn:example:crm")
    assert not valid_resource_uri("crm")
    assert not valid_resource_uri("https://crm.example#frag")


def test_selects_the_named_resource_and_defaults_to_allowed_scopes() -> None:
    chosen = audience.select([CRM, MAIL], ["https://crm.example"], None, ["deals:read"], ISSUER)
    assert (chosen.audience, chosen.scopes) == ("https://crm.example", ("deals:read",))


def test_implied_scope_may_be_requested() -> None:
    chosen = audience.select(
        [CRM], ["https://crm.example"], ["deals:read"], ["deals:admin"], ISSUER
    )
    assert chosen.scopes == ("deals:read",)


def test_escalation_is_invalid_scope() -> None:
    with pytest.raises(InvalidScope):
        audience.select([CRM], ["https://crm.example"], ["deals:admin"], ["deals:read"], ISSUER)


def test_resource_must_accept_the_scope() -> None:
    with pytest.raises(InvalidScope):
        audience.select([CRM, MAIL], ["https://crm.example"], ["mail:read"], ["mail:read"], ISSUER)


def test_unknown_and_multiple_resources_are_invalid_target() -> None:
    with pytest.raises(InvalidTarget):
        audience.select([CRM], ["https://other.example"], None, ["deals:read"], ISSUER)
    with pytest.raises(InvalidTarget):
        audience.select([CRM, MAIL], [CRM.uri, MAIL.uri], None, ["deals:read"], ISSUER)
    with pytest.raises(InvalidTarget):
        audience.select([CRM], ["not-a-uri"], None, ["deals:read"], ISSUER)


def test_without_resource_the_owner_of_the_scopes_is_the_audience() -> None:
    chosen = audience.select([CRM, MAIL], [], ["mail:send"], ["mail:send", "deals:read"], ISSUER)
    assert chosen.audience == MAIL.uri
    with pytest.raises(InvalidTarget):
        audience.select([CRM, MAIL], [], None, ["mail:send", "deals:read"], ISSUER)
    loose = audience.select([CRM], [], None, ["reports"], ISSUER)
    assert loose.audience == ISSUER


@given(st.integers(min_value=1, max_value=10_000), st.integers(min_value=60, max_value=3600))
def test_lifetime_never_exceeds_an_hour_or_the_tenant_maximum(default: int, maximum: int) -> None:
    lifetime = TenantSettings(max_token_lifetime=maximum).access_token_lifetime(default)
    assert 1 <= lifetime <= min(maximum, 3600)
