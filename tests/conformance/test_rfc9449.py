"""RFC 9449 (DPoP) and RFC 7638 (JWK thumbprint) against the RFCs' own examples."""

import pytest

from valetkey.oauth.dpop import (
    InvalidDPoPProof,
    access_token_hash,
    jwk_thumbprint,
    verify_proof,
)

# RFC 9449 §4.1, Figure 4 (the proof the RFC's token request carries)
RFC_PROOF = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0"
    "VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10"
    "NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoi"
    "UE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-G"
    "xA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
)
RFC_IAT = 1562262616
RFC_JWK = {
    "kty": "EC",
    "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
    "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
    "crv": "P-256",
}
# RFC 9449 §6.1: the `cnf.jkt` of a token bound to that key
RFC_JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"

# RFC 7638 §3.1
RFC7638_KEY = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


class Seen:
    def __init__(self) -> None:
        self.keys: set[str] = set()

    async def consume_assertion(self, key: str, expires_at: float) -> bool:
        if key in self.keys:
            return False
        self.keys.add(key)
        return True


def test_rfc7638_thumbprint_counts_only_required_members() -> None:
    assert jwk_thumbprint(RFC7638_KEY) == RFC7638_THUMBPRINT
    bare = {k: RFC7638_KEY[k] for k in ("kty", "n", "e")}
    assert jwk_thumbprint(bare) == RFC7638_THUMBPRINT


def test_rfc9449_ath_example() -> None:
    # §7.1: the access token and the `ath` of the proof sent with it
    token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
    assert access_token_hash(token) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"


def test_rfc9449_example_key_thumbprint() -> None:
    assert jwk_thumbprint(RFC_JWK) == RFC_JKT


async def test_rfc9449_example_proof_verifies() -> None:
    proof = await verify_proof(
        RFC_PROOF,
        method="POST",
        url="https://server.example.com/token",
        now=RFC_IAT + 5,
        replay=Seen(),
    )
    assert (proof.jkt, proof.jti, proof.iat) == (RFC_JKT, "-BwC3ESc6acc2lTc", RFC_IAT)
    assert (proof.htm, proof.htu, proof.nonce) == ("POST", "https://server.example.com/token", None)


async def test_rfc9449_example_proof_is_single_use() -> None:
    seen = Seen()
    url = "https://server.example.com/token"
    await verify_proof(RFC_PROOF, method="POST", url=url, now=RFC_IAT, replay=seen)
    with pytest.raises(InvalidDPoPProof, match="already used"):
        await verify_proof(RFC_PROOF, method="POST", url=url, now=RFC_IAT, replay=seen)


@pytest.mark.parametrize(
    ("method", "url", "now"),
    [
        ("GET", "https://server.example.com/token", RFC_IAT),
        ("POST", "https://server.example.com/authorize", RFC_IAT),
        ("POST", "https://server.example.com/token", RFC_IAT + 3600),
    ],
)
async def test_rfc9449_example_proof_is_bound_to_its_request(
    method: str, url: str, now: int
) -> None:
    with pytest.raises(InvalidDPoPProof):
        await verify_proof(RFC_PROOF, method=method, url=url, now=now, replay=Seen())
