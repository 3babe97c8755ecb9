"""Agents' public keys for `private_key_jwt`: PEM, a JWK or a JWKS in, a public JWKS out.

A private key given by mistake is refused, not stored: ValetKey must never hold an agent's
private key.
"""

import json
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, KeySet, OKPKey, RSAKey

from valetkey.errors import InvalidInput

_PUBLIC_TYPES = (ECKey, RSAKey, OKPKey)


def parse_public_keys(text: str) -> dict[str, Any]:
    text = text.strip()
    if "PRIVATE KEY" in text:
        raise InvalidInput("that is a private key: give ValetKey the public key only")
    try:
        if text.startswith("{"):
            data = json.loads(text)
            items = data["keys"] if isinstance(data, dict) and "keys" in data else [data]
            keys = [_public_jwk(JWKRegistry.import_key(item)) for item in items]
            if any("d" in item for item in items):
                raise InvalidInput("that JWK holds a private key: give the public key only")
        else:
            keys = [_public_jwk(JWKRegistry.import_key(text.encode()))]
    except InvalidInput:
        raise
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidInput(f"not a PEM public key, JWK or JWKS: {exc}") from exc
    if not keys:
        raise InvalidInput("the JWKS holds no key")
    KeySet.import_key_set({"keys": keys})  # the set as a whole must load
    return {"keys": keys}


def _public_jwk(key: Any) -> dict[str, Any]:
    if not isinstance(key, _PUBLIC_TYPES):
        raise InvalidInput("only EC, RSA and OKP (Ed25519) public keys are accepted")
    jwk = dict(key.as_dict(private=False))
    jwk.setdefault("kid", key.thumbprint())
    return jwk
