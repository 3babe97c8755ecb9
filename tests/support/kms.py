"""A stand-in external KMS for `VALETKEY_KMS=tests.support.kms:from_env`: its key lives in a
file ValetKey never reads, and it counts what it wraps and unwraps (in a log file, since it
runs inside the server's processes)."""

import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_ID = "test-kms-key-1"


class FileKms:
    def __init__(self, key_file: Path, log_file: Path) -> None:
        self._aead = AESGCM(key_file.read_bytes())
        self._log = log_file

    @property
    def key_id(self) -> str:
        return KEY_ID

    def _note(self, what: str) -> None:
        with self._log.open("a") as log:
            log.write(what + "\n")

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        self._note("wrap")
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        self._note("unwrap")
        return self._aead.decrypt(wrapped[:12], wrapped[12:], context)


def from_env() -> FileKms:
    return FileKms(Path(os.environ["TEST_KMS_KEY_FILE"]), Path(os.environ["TEST_KMS_LOG"]))
