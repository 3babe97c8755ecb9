"""Envelope encryption (AES-256-GCM) behind a small AEAD interface.

Each record gets its own random data key; the data key is wrapped by a key-encryption
key (the local master key, or a KMS later). The ciphertext names the key id that wrapped
it, so the master key can rotate without a flag day (as Hydra's `aead`).

Format (ASCII, safe in any column): `vk1.<kek id>.<b64 wrapped DEK>.<b64 nonce+ciphertext>`.
The caller's `context` is bound as associated data to both layers, so a ciphertext moved
to another row does not decrypt.
"""

import base64
import hashlib
import importlib
import os
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = "vk1"


class DecryptionError(Exception):
    """The ciphertext is corrupt, was moved, or its key is not available."""


class KeyEncryptionKey(Protocol):
    """Wraps data keys. A KMS client implements the same three members."""

    @property
    def key_id(self) -> str: ...

    def wrap(self, data_key: bytes, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes: ...


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LocalKey:
    """A 256-bit master key held in memory (from `master.key` or `VALETKEY_MASTER_KEY`)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the master key must be 256 bits")
        self._aead = AESGCM(key)
        self._key_id = "local-" + hashlib.sha256(b"valetkey-kek-id" + key).hexdigest()[:12]
        self._key = key

    @classmethod
    def from_text(cls, text: str) -> "LocalKey":
        try:
            return cls(_unb64(text.strip()))
        except (ValueError, TypeError) as exc:
            raise ValueError("the master key must be base64url of 32 bytes") from exc

    @property
    def key_id(self) -> str:
        return self._key_id

    def derive(self, purpose: str) -> bytes:
        """A 256-bit key for one purpose (session cookies, DPoP nonces), the same on every
        node that shares the master key, and useless for anything else (HKDF, RFC 5869)."""
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"valetkey:" + purpose.encode()
        ).derive(self._key)

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return self._aead.decrypt(wrapped[:12], wrapped[12:], context)


def generate_master_key_text() -> str:
    return _b64(os.urandom(32))


class Envelope:
    """Encrypts with the primary key; decrypts with whichever known key wrapped the record."""

    def __init__(self, primary: KeyEncryptionKey, *older: KeyEncryptionKey) -> None:
        self._primary = primary
        self._keys = {k.key_id: k for k in (primary, *older)}

    @property
    def primary_key_id(self) -> str:
        return self._primary.key_id

    def encrypt(self, plaintext: bytes, context: str) -> str:
        aad = context.encode()
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        body = nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)
        wrapped = self._primary.wrap(data_key, aad)
        return ".".join((_VERSION, self._primary.key_id, _b64(wrapped), _b64(body)))

    def rewrap(self, ciphertext: str, context: str) -> str | None:
        """The same record with its data key wrapped by the primary key (the body is not
        touched); None when the primary key already wraps it."""
        try:
            version, key_id, wrapped_text, body_text = ciphertext.split(".")
        except ValueError as exc:
            raise DecryptionError("not a ValetKey ciphertext") from exc
        if key_id == self._primary.key_id:
            return None
        kek = self._keys.get(key_id)
        if version != _VERSION or kek is None:
            raise DecryptionError(f"key {key_id!r} that wrapped this record is not configured")
        aad = context.encode()
        try:
            data_key = kek.unwrap(_unb64(wrapped_text), aad)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("ciphertext does not authenticate") from exc
        wrapped = self._primary.wrap(data_key, aad)
        return ".".join((_VERSION, self._primary.key_id, _b64(wrapped), body_text))

    def decrypt(self, ciphertext: str, context: str) -> bytes:
        try:
            version, key_id, wrapped_text, body_text = ciphertext.split(".")
        except ValueError as exc:
            raise DecryptionError("not a ValetKey ciphertext") from exc
        if version != _VERSION:
            raise DecryptionError(f"unknown ciphertext version {version!r}")
        kek = self._keys.get(key_id)
        if kek is None:
            raise DecryptionError(f"key {key_id!r} that wrapped this record is not configured")
        aad = context.encode()
        try:
            data_key = kek.unwrap(_unb64(wrapped_text), aad)
            body = _unb64(body_text)
            return AESGCM(data_key).decrypt(body[:12], body[12:], aad)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError("ciphertext does not authenticate") from exc


def load_kms(spec: str) -> KeyEncryptionKey:
    """The key-encryption key of an external KMS, from `module:factory` (VALETKEY_KMS).

    The factory takes no arguments (it reads its own configuration, e.g. a key ARN from the
    environment) and returns an object with `key_id`, `wrap(data_key, context)` and
    `unwrap(wrapped, context)`. Only data keys cross to the KMS; records never do. `wrap`
    and `unwrap` are called on the request path, so a network KMS should cache unwrapped
    data keys briefly or sit behind a local agent."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError("VALETKEY_KMS is module:factory, e.g. mycompany.kms:valetkey_kek")
    factory = getattr(importlib.import_module(module_name), attribute)
    kek = factory()
    if not all(hasattr(kek, name) for name in ("key_id", "wrap", "unwrap")):
        raise ValueError(f"{spec} did not return a key-encryption key (key_id, wrap, unwrap)")
    if not kek.key_id or "." in kek.key_id or len(kek.key_id) > 64:
        raise ValueError("a KMS key id is 1-64 characters without dots")
    return kek  # type: ignore[no-any-return]
