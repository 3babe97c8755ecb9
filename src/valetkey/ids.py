"""Prefixed random identifiers, so a leaked id says what it is (`agt_`, `ten_`, `vk_cs_`)."""

import secrets


def new_id(prefix: str, nbytes: int = 12) -> str:
    """Return `prefix_` followed by a URL-safe random string (96 bits by default)."""
    return f"{prefix}_{secrets.token_hex(nbytes)}"


def new_token(prefix: str, nbytes: int = 32) -> str:
    """A bearer secret: prefixed for secret scanners, 256 bits of randomness by default."""
    return f"{prefix}_{secrets.token_urlsafe(nbytes)}"
