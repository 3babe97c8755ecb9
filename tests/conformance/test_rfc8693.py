"""RFC 8693 (Token Exchange): the RFC's own examples run through ValetKey's parsing, and the
`act` nesting order its §4.1 prescribes. The live exchange (issued_token_type, act, aud,
errors) is checked end to end in tests/integration/test_token_exchange.py and
test_chains_and_mandates.py."""

from urllib.parse import quote

from valetkey.oauth.client_auth import extract_credentials
from valetkey.oauth.grants.token_exchange import (
    ACCESS_TOKEN_TYPE,
    GRANT_TYPE,
    SUBJECT_TYPES,
    TokenExchangeGrant,
)
from valetkey.oauth.server import parse_params
from valetkey.oauth.verification import actors
from valetkey.web.oauth_routes import parse_form

# §2.3, Figure 2: the example token exchange request.
EXAMPLE_BODY = (
    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
    "&resource=https%3A%2F%2Fbackend.example.com%2Fapi"
    "&subject_token=accVkjcJyb4BWCxGsndESCJQbdFMogUC5PbRDqceLTC"
    "&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"
)
EXAMPLE_AUTHORIZATION = "Basic cnMwODpsb25nLXNlY3VyZS1yYW5kb20tc2VjcmV0"

# §4.1: a token whose subject is acted for by service16, which service77 acted for before.
NESTED_ACT_CLAIMS = {
    "aud": "https://consumer.example.com",
    "iss": "https://issuer.example.com",
    "exp": 1443904177,
    "nbf": 1443904077,
    "sub": "user@example.com",
    "act": {
        "sub": "https://service16.example.com",
        "act": {"sub": "https://service77.example.com"},
    },
}


def test_the_example_request_parses_as_a_token_exchange() -> None:
    pairs = parse_form("application/x-www-form-urlencoded", b"", EXAMPLE_BODY.encode())
    params, resources = parse_params(pairs)
    assert params["grant_type"] == GRANT_TYPE
    assert resources == ("https://backend.example.com/api",)
    assert params["subject_token_type"] == ACCESS_TOKEN_TYPE
    TokenExchangeGrant._check_parameters(params)  # accepted: no exception
    creds = extract_credentials(EXAMPLE_AUTHORIZATION, params)
    assert creds is not None
    assert (creds.client_id, creds.secret) == ("rs08", "long-secure-random-secret")


def test_the_token_type_identifiers_are_the_registered_ones() -> None:
    # §3: the URIs registered in the "OAuth URI" registry.
    prefix = "urn:ietf:params:oauth:token-type:"
    assert prefix + "access_token" == ACCESS_TOKEN_TYPE
    assert {prefix + "jwt", prefix + "id_token", prefix + "access_token"} == set(SUBJECT_TYPES)
    assert quote(GRANT_TYPE, safe="") in EXAMPLE_BODY


def test_outermost_act_is_the_current_actor() -> None:
    # §4.1: "the outermost act claim represents the current actor while nested act claims
    # represent prior actors", so the chain reads newest first.
    assert actors(NESTED_ACT_CLAIMS["act"]) == [
        "https://service16.example.com",
        "https://service77.example.com",
    ]


def test_malformed_act_claims_have_no_actors() -> None:
    for act in ({"sub": 42}, {"act": {"sub": "x"}}, ["x"], {"sub": "a", "act": "b"}):
        assert actors(act) == []
