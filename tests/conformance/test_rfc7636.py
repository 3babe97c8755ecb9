"""RFC 7636 (PKCE): the Appendix B vector, and the refusals of a server that allows only S256."""

import pytest

from valetkey.oauth.errors import InvalidRequest
from valetkey.oauth.pkce import check_challenge, s256, verifier_matches

# RFC 7636 Appendix B
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_appendix_b_vector() -> None:
    assert s256(VERIFIER) == CHALLENGE
    assert verifier_matches(VERIFIER, CHALLENGE)


def test_s256_challenge_is_accepted() -> None:
    assert check_challenge(CHALLENGE, "S256") == CHALLENGE


def test_missing_challenge_is_refused() -> None:
    for challenge in (None, ""):
        with pytest.raises(InvalidRequest, match="code_challenge is required"):
            check_challenge(challenge, "S256")


@pytest.mark.parametrize("method", ["plain", None, "", "s256", "S512"])
def test_only_s256_is_supported(method: str | None) -> None:
    # §4.3: a missing method means plain, so it is refused too.
    with pytest.raises(InvalidRequest, match="S256"):
        check_challenge(CHALLENGE, method)


@pytest.mark.parametrize("challenge", [CHALLENGE[:-1], CHALLENGE + "A", CHALLENGE + "=", "+" * 43])
def test_malformed_challenge_is_refused(challenge: str) -> None:
    with pytest.raises(InvalidRequest, match="43 base64url"):
        check_challenge(challenge, "S256")


def test_plain_verifier_equal_to_the_challenge_does_not_match() -> None:
    assert not verifier_matches(CHALLENGE, CHALLENGE)


def test_wrong_missing_or_malformed_verifier_does_not_match() -> None:
    assert not verifier_matches(None, CHALLENGE)
    assert not verifier_matches("", CHALLENGE)
    assert not verifier_matches(VERIFIER[:-1] + "J", CHALLENGE)
    assert not verifier_matches(VERIFIER + "\n", CHALLENGE)
    assert not verifier_matches("é" * 43, CHALLENGE)


def test_verifier_length_bounds() -> None:
    # §4.1: 43 to 128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~".
    for length, ok in ((42, False), (43, True), (128, True), (129, False)):
        verifier = ("a-._~" * 30)[:length]
        assert verifier_matches(verifier, s256(verifier)) is ok
