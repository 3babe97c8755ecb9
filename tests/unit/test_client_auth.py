import base64

import pytest

from valetkey.identity.secrets import digest_secret, generate_secret, secret_matches
from valetkey.oauth.client_auth import ASSERTION_TYPE, extract_credentials
from valetkey.oauth.errors import InvalidClient, InvalidRequest
from valetkey.oauth.server import parse_params


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_credentials_are_form_decoded() -> None:
    creds = extract_credentials(_basic("agt_1", "a%2Bb"), {})
    assert creds is not None
    assert (creds.method, creds.client_id, creds.secret) == ("client_secret_basic", "agt_1", "a+b")


def test_post_credentials() -> None:
    creds = extract_credentials(None, {"client_id": "agt_1", "client_secret": "s"})
    assert creds is not None and creds.method == "client_secret_post"


def test_two_methods_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        extract_credentials(_basic("agt_1", "s"), {"client_id": "agt_1", "client_secret": "s"})


def test_malformed_basic_is_invalid_client_with_challenge() -> None:
    with pytest.raises(InvalidClient) as caught:
        extract_credentials("Basic !!!", {})
    assert caught.value.basic_challenge


def test_assertion_type_must_be_jwt_bearer() -> None:
    with pytest.raises(InvalidClient):
        extract_credentials(None, {"client_assertion_type": "x", "client_assertion": "a.b.c"})
    with pytest.raises(InvalidClient):
        extract_credentials(
            None, {"client_assertion_type": ASSERTION_TYPE, "client_assertion": "x"}
        )


def test_client_id_must_match_the_authenticated_client() -> None:
    with pytest.raises(InvalidRequest):
        extract_credentials(_basic("agt_1", "s"), {"client_id": "agt_2"})


def test_repeated_parameters_are_refused_but_resource_may_repeat() -> None:
    params, resources = parse_params([("resource", "a"), ("resource", "b"), ("scope", "x")])
    assert resources == ("a", "b") and params == {"scope": "x"}
    with pytest.raises(InvalidRequest, match="scope"):
        parse_params([("scope", "x"), ("scope", "y")])


def test_secrets_are_prefixed_long_and_stored_as_digests() -> None:
    secret = generate_secret()
    assert secret.startswith("vk_cs_") and len(secret) >= 6 + 43
    digest = digest_secret(secret)
    assert secret not in digest
    assert secret_matches(secret, digest)
    assert not secret_matches(secret + "x", digest)
