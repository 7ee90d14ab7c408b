"""Envelope-free AES-256-GCM for secrets at rest, with key ids for rotation.

A ciphertext reads ``v1.<key id>.<base64url(nonce || ciphertext+tag)>``. The first key of
the ring encrypts; every key decrypts, so rotating is: put the new key first, keep the old
ones, run ``switchyard secrets rotate`` to re-encrypt, then drop the old key. Callers pass
associated data (for example the owning row's id) so a ciphertext cannot be moved to
another row unnoticed.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core.errors import SettingsError, TerminalError

_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_VERSION = "v1"


class DecryptionFailed(TerminalError):
    problem_type = "decryption-failed"
    title = "Stored secret could not be decrypted"


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_key() -> str:
    """A fresh 256-bit key, base64url without padding."""
    return base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode().rstrip("=")


class KeyRing:
    """Named AES-GCM keys; the first one is active."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise SettingsError("SWITCHYARD_ENCRYPTION_KEYS: at least one key is required")
        self._keys: dict[str, AESGCM] = {}
        self._active_raw = keys[0][1]
        for key_id, raw in keys:
            if not _KEY_ID.match(key_id):
                raise SettingsError(f"SWITCHYARD_ENCRYPTION_KEYS: bad key id {key_id!r}")
            if len(raw) != 32:
                raise SettingsError(
                    f"SWITCHYARD_ENCRYPTION_KEYS: key {key_id!r} must be 32 bytes, "
                    f"got {len(raw)} (generate one with `switchyard secrets new-key`)"
                )
            self._keys[key_id] = AESGCM(raw)
        self.active_key_id = keys[0][0]

    @classmethod
    def parse(cls, entries: Sequence[str]) -> KeyRing:
        """Parse ``KEY_ID:BASE64`` entries as written in SWITCHYARD_ENCRYPTION_KEYS."""
        keys: list[tuple[str, bytes]] = []
        for entry in entries:
            key_id, sep, encoded = entry.partition(":")
            if not sep:
                raise SettingsError(
                    "SWITCHYARD_ENCRYPTION_KEYS: each entry must read KEY_ID:BASE64_KEY"
                )
            try:
                keys.append((key_id, _b64decode(encoded)))
            except ValueError:
                raise SettingsError(
                    f"SWITCHYARD_ENCRYPTION_KEYS: key {key_id!r} is not valid base64"
                ) from None
        return cls(keys)

    @classmethod
    def from_file(cls, path: Path, *, create: bool) -> KeyRing:
        """Load (or, in embedded mode, create with mode 0600) a single-key file."""
        if not path.exists():
            if not create:
                raise SettingsError(
                    "SWITCHYARD_ENCRYPTION_KEYS is not set; set it to KEY_ID:BASE64_KEY "
                    "(make one with `switchyard secrets new-key`)"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(f"local:{generate_key()}\n")
        return cls.parse([line for line in path.read_text().split() if line])

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` (HKDF-SHA256 from the active key), e.g. the HMAC
        key of a tenant's pseudonyms. Derived keys change when the active key rotates."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
            self._active_raw
        )

    def encrypt(self, plaintext: bytes, associated_data: bytes) -> str:
        nonce = os.urandom(12)
        sealed = self._keys[self.active_key_id].encrypt(nonce, plaintext, associated_data)
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{_VERSION}.{self.active_key_id}.{body}"

    def decrypt(self, token: str, associated_data: bytes) -> bytes:
        version, _, rest = token.partition(".")
        key_id, _, body = rest.partition(".")
        if version != _VERSION or not body:
            raise DecryptionFailed("not a Switchyard ciphertext")
        key = self._keys.get(key_id)
        if key is None:
            raise DecryptionFailed(
                f"encrypted with key {key_id!r}, which is not in SWITCHYARD_ENCRYPTION_KEYS"
            )
        raw = _b64decode(body)
        try:
            return key.decrypt(raw[:12], raw[12:], associated_data)
        except InvalidTag:
            raise DecryptionFailed("ciphertext failed authentication") from None

    def rewrap(self, token: str, associated_data: bytes) -> str | None:
        """``token`` re-encrypted under the active key, or None if it already is."""
        if self.key_id_of(token) == self.active_key_id:
            return None
        return self.encrypt(self.decrypt(token, associated_data), associated_data)

    @staticmethod
    def key_id_of(token: str) -> str:
        return token.split(".", 2)[1] if token.count(".") >= 2 else ""
