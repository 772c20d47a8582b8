"""Templates encrypted at rest (FACEID_ENCRYPTION_KEY_FILE): embeddings, face crops, photo
thumbnails and descriptors, and unknown faces are stored sealed with AES-256-GCM
(`cryptography`, OpenSSL's implementation), the column's name as associated data, so that a
value moved to another column does not open; the saved index snapshot is sealed whole.

The key file holds one key per line, 64 hex digits (`openssl rand -hex 32`); the first seals,
every one opens, so a key is rotated by putting the new one first, running `faceid gallery
rotate-key` (which seals every value anew, in batches, and resumes where a kill left it), then
removing the old line. A sealed value starts with its key's id (the first 8 hex digits of the
key's sha256), so a store names the key it needs, and a value that is not sealed is read as it
is: a gallery enrolled before encryption was turned on is sealed by the same command.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"FS1"
KEY_ID_BYTES = 8  # hex characters
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = len(MAGIC) + KEY_ID_BYTES + NONCE_BYTES + TAG_BYTES
HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")


class SealError(ValueError):
    """A sealed value that cannot be opened: no key for it, or it was altered."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:KEY_ID_BYTES]


def sealed_key(value: bytes | memoryview | None) -> str | None:
    """The id of the key a value was sealed with; None for a value that is not sealed."""
    if value is None:
        return None
    head = bytes(value[: len(MAGIC) + KEY_ID_BYTES])
    return head[len(MAGIC):].decode("ascii", "replace") if head.startswith(MAGIC) else None


class Sealer:
    """Seals and opens a store's sensitive values; with no key, it leaves values as they are."""

    def __init__(self, keys: list[bytes] | None = None) -> None:
        self._keys = {key_id(k): AESGCM(k) for k in (keys or [])}
        self.current = key_id(keys[0]) if keys else None

    @property
    def on(self) -> bool:
        return self.current is not None

    @classmethod
    def from_file(cls, path: Path | None) -> Sealer:
        """The keys of FACEID_ENCRYPTION_KEY_FILE (none when it is not set). A bad line is a
        ValueError naming the file and line, never the key."""
        if path is None:
            return cls()
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"FACEID_ENCRYPTION_KEY_FILE {path}: {exc.strerror}") from exc
        keys = []
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if not HEX_KEY.match(text):
                raise ValueError(f"{path}:{number}: a key is 64 hex digits (openssl rand -hex 32)")
            keys.append(bytes.fromhex(text))
        if not keys:
            raise ValueError(f"{path}: no key in it (one per line, 64 hex digits; the first seals)")
        return cls(keys)

    def seal(self, value: bytes | None, column: str) -> bytes | None:
        if value is None or self.current is None:
            return value
        nonce = os.urandom(NONCE_BYTES)
        return MAGIC + self.current.encode() + nonce + self._keys[self.current].encrypt(nonce, bytes(value), column.encode())

    def open(self, value: bytes | memoryview | None, column: str) -> bytes | None:
        """The value as it was stored: opened if sealed, as it is if not."""
        if value is None:
            return None
        data = bytes(value)
        sealed_with = sealed_key(data)
        if sealed_with is None:
            return data
        cipher = self._keys.get(sealed_with)
        if cipher is None:
            raise SealError(missing_key(sealed_with))
        start = len(MAGIC) + KEY_ID_BYTES
        try:
            return cipher.decrypt(data[start : start + NONCE_BYTES], data[start + NONCE_BYTES :], column.encode())
        except InvalidTag as exc:
            raise SealError(f"a sealed {column} failed its authentication: altered or damaged") from exc

    def knows(self, key: str) -> bool:
        return key in self._keys

    def stale(self, value: bytes | memoryview | None) -> bool:
        """Whether a value is not sealed with the current key (what rotation reseals)."""
        return value is not None and self.on and sealed_key(value) != self.current


# The columns sealed, as associated data: a value moved to another column does not open.
EMBEDDING, CROP, THUMB, VECTOR = "faces.embedding", "faces.crop", "faces.photo_thumb", "faces.photo_vector"
UNKNOWN_EMBEDDING, UNKNOWN_CROP, SNAPSHOT = "unknowns.embedding", "unknowns.crop", "snapshot"


def sealed_photo(sealer: Sealer, columns: tuple[bytes | None, bytes | None, str | None]) -> tuple[bytes | None, bytes | None, str | None]:
    """records.photo_columns' (thumbnail, vector, box), the first two sealed."""
    thumb, vector, box = columns
    return sealer.seal(thumb, THUMB), sealer.seal(vector, VECTOR), box


# What rotation reseals: (table, its id column, its sealed columns with their names).
SEALED = (("faces", "face_id", (("embedding", EMBEDDING), ("crop", CROP), ("photo_thumb", THUMB), ("photo_vector", VECTOR))),
          ("unknowns", "id", (("embedding", UNKNOWN_EMBEDDING), ("crop", UNKNOWN_CROP))))


def resealed(sealer: Sealer, values: tuple, columns: tuple[tuple[str, str], ...]) -> tuple | None:
    """A row's sealed columns sealed with the current key, or None if they all are already."""
    if not any(sealer.stale(v) for v in values):
        return None
    return tuple(sealer.seal(sealer.open(v, name), name) for v, (_, name) in zip(values, columns))


def missing_key(key: str) -> str:
    return (f"the gallery is encrypted with key {key}, which FACEID_ENCRYPTION_KEY_FILE does not hold"
            " (set it to the file holding that key)")
