"""User passwords for ValetKey's own login: argon2id (RFC 9106), never stored in the clear.

Unlike client secrets (256 random bits, a plain digest suffices), people choose passwords
that can be guessed, so each costs a slow, salted, memory-hard hash.
"""

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from valetkey.errors import InvalidInput

MIN_LENGTH = 12
_HASHER = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory profile


def hash_password(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"a password has at least {MIN_LENGTH} characters")
    if len(password) > 1024:
        raise InvalidInput("a password has at most 1024 characters")
    return _HASHER.hash(password)


def password_matches(password: str, stored: str | None) -> bool:
    if not stored:
        _HASHER.hash("timing-equaliser-for-users-without-a-password")
        return False
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
