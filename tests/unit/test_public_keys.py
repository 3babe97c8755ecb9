import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from joserfc.jwk import ECKey

from valetkey.clock import parse_duration
from valetkey.errors import InvalidInput
from valetkey.identity.public_keys import parse_public_keys


def test_pem_jwk_and_jwks_are_accepted() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    from_pem = parse_public_keys(pem)
    assert from_pem["keys"][0]["kty"] == "EC" and "kid" in from_pem["keys"][0]
    jwk = ECKey.generate_key("P-256").as_dict(private=False)
    assert parse_public_keys(json.dumps(jwk))["keys"][0]["x"] == jwk["x"]
    assert len(parse_public_keys(json.dumps({"keys": [jwk, jwk]}))["keys"]) == 2
    ed = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert parse_public_keys(ed.decode())["keys"][0]["kty"] == "OKP"


def test_private_keys_and_garbage_are_refused() -> None:
    private_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(InvalidInput, match="private"):
        parse_public_keys(private_pem)
    with pytest.raises(InvalidInput, match="private"):
        parse_public_keys(json.dumps(ECKey.generate_key("P-256").as_dict(private=True)))
    with pytest.raises(InvalidInput):
        parse_public_keys("not a key")
    with pytest.raises(InvalidInput):
        parse_public_keys(json.dumps({"kty": "oct", "k": "c2VjcmV0"}))


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("2h") == 7200
    assert parse_duration("30d") == 2_592_000
    assert parse_duration("120") == 120
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
