import pytest

from valetkey.errors import InvalidInput
from valetkey.identity.passwords import hash_password, password_matches


def test_argon2id_hashes_verify_and_never_hold_the_password() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert "correct horse battery" not in stored
    assert password_matches("correct horse battery", stored)
    assert not password_matches("correct horse batterY", stored)
    assert not password_matches("anything", None)
    assert not password_matches("anything", "not-a-hash")


def test_short_passwords_are_refused() -> None:
    with pytest.raises(InvalidInput, match="at least 12"):
        hash_password("short")
