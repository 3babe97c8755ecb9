import pytest

from valetkey.vault.cipher import DecryptionError, Envelope, LocalKey, generate_master_key_text


def test_round_trip_and_key_id_in_ciphertext() -> None:
    kek = LocalKey.from_text(generate_master_key_text())
    envelope = Envelope(kek)
    sealed = envelope.encrypt(b"private key bytes", "signing_key:k1")
    assert sealed.split(".")[1] == kek.key_id
    assert b"private key bytes" not in sealed.encode()
    assert envelope.decrypt(sealed, "signing_key:k1") == b"private key bytes"


def test_context_is_bound() -> None:
    envelope = Envelope(LocalKey.from_text(generate_master_key_text()))
    sealed = envelope.encrypt(b"x", "signing_key:k1")
    with pytest.raises(DecryptionError):
        envelope.decrypt(sealed, "signing_key:k2")


def test_tampering_and_unknown_key_fail() -> None:
    envelope = Envelope(LocalKey.from_text(generate_master_key_text()))
    sealed = envelope.encrypt(b"x", "c")
    version, kid, wrapped, body = sealed.split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(DecryptionError):
        envelope.decrypt(".".join((version, kid, wrapped, flipped)), "c")
    other = Envelope(LocalKey.from_text(generate_master_key_text()))
    with pytest.raises(DecryptionError, match="not configured"):
        other.decrypt(sealed, "c")


def test_old_master_key_still_decrypts_after_rotation() -> None:
    old = LocalKey.from_text(generate_master_key_text())
    sealed = Envelope(old).encrypt(b"x", "c")
    rotated = Envelope(LocalKey.from_text(generate_master_key_text()), old)
    assert rotated.decrypt(sealed, "c") == b"x"
    assert rotated.encrypt(b"y", "c").split(".")[1] == rotated.primary_key_id != old.key_id


def test_master_key_must_be_256_bits() -> None:
    with pytest.raises(ValueError, match="256 bits"):
        LocalKey(b"short")
