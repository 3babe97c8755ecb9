"""Client secrets: 256 random bits, prefixed `vk_cs_`, stored as a digest, compared in
constant time.

A salted slow hash (argon2) protects low-entropy passwords; a 256-bit random secret cannot be
guessed, so SHA-256 is enough and keeps client authentication on the hot path cheap.
"""

import hashlib
import hmac

from valetkey.ids import new_token

SECRET_PREFIX = "vk_cs"


def generate_secret() -> str:
    return new_token(SECRET_PREFIX, 32)


def digest_secret(secret: str) -> str:
    return "sha256$" + hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, digest: str) -> bool:
    return hmac.compare_digest(digest_secret(secret), digest)
