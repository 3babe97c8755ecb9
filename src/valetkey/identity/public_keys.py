"""Agents' public keys for `private_key_jwt`: PEM, a JWK or a JWKS in, a public JWKS out.

A private key given by mistake is refused, not stored: ValetKey must never hold an agent's
private key.
"""

import json
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from valetkey.errors import InvalidInput

_TYPES: dict[str, Any] = {"EC": ECKey, "RSA": RSAKey, "OKP": OKPKey}


def parse_public_keys(text: str) -> dict[str, Any]:
    text = text.strip()
    if "PRIVATE KEY" in text:
        raise InvalidInput("that is a private key: give ValetKey the public key only")
    try:
        if text.startswith("{"):
            data = json.loads(text)
            items = data["keys"] if isinstance(data, dict) and "keys" in data else [data]
            keys = [_from_jwk(item) for item in items]
        else:
            keys = [_from_pem(text.encode())]
    except InvalidInput:
        raise
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidInput(f"not a PEM public key, JWK or JWKS: {exc}") from exc
    if not keys:
        raise InvalidInput("the JWKS holds no key")
    KeySet.import_key_set({"keys": keys})
    return {"keys": keys}


def _from_jwk(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict) or item.get("kty") not in _TYPES:
        raise InvalidInput("only EC, RSA and OKP (Ed25519) public keys are accepted")
    if "d" in item:
        raise InvalidInput("that JWK holds a private key: give the public key only")
    return _public_jwk(_TYPES[item["kty"]].import_key(item))


def _from_pem(pem: bytes) -> dict[str, Any]:
    for key_type in _TYPES.values():
        try:
            return _public_jwk(key_type.import_key(pem))
        except (JoseError, ValueError, TypeError):
            continue
    raise InvalidInput("not a PEM public key (EC, RSA or Ed25519)")


def _public_jwk(key: Any) -> dict[str, Any]:
    jwk = dict(key.as_dict(private=False))
    jwk.setdefault("kid", key.thumbprint())
    return jwk
