"""API keys: who may do what, in which collection.

Keys come from a secret file (FACEID_API_KEYS_FILE), one per line:

    <key id> <role> <collection or *> <the key, or sha256:<its hex digest>>

and FACEID_API_KEY, when set, is one more: an admin key for every collection (id `api-key`).
Only digests are kept in memory, a key is compared by its digest in constant time, and only a
key's id ever appears in logs or answers. Roles grow: `identify` (identify, verify, detect, read
persons, the probes), `enrol` (also enrol and delete persons), `admin` (also create and delete
collections, export and import them). A key of one collection gets 403 in another.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from app.schemas import COLLECTION_PATTERN

Role = Literal["identify", "enrol", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
ANY_COLLECTION = "*"
KEY_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
COLLECTION = re.compile(COLLECTION_PATTERN)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MIN_KEY_LENGTH = 16
LEGACY_ID = "api-key"  # FACEID_API_KEY's id


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class Key:
    id: str
    role: Role
    collection: str  # a collection's name, or ANY_COLLECTION
    sha256: bytes

    def allows(self, role: Role, collection: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role) and self.collection in (ANY_COLLECTION, collection)

    def sees(self, collection: str) -> bool:
        return self.collection in (ANY_COLLECTION, collection)


class KeyRing:
    def __init__(self, keys: list[Key]) -> None:
        ids = [k.id for k in keys]
        if len(set(ids)) != len(ids):
            raise ValueError(f"API key ids must be unique; repeated: {sorted({i for i in ids if ids.count(i) > 1})}")
        self.keys = keys

    @property
    def open(self) -> bool:
        """No key configured: nothing is checked (a service on a trusted network)."""
        return not self.keys

    def find(self, given: str | None) -> Key | None:
        """The key `given` is, by digest (every key compared, in constant time)."""
        if given is None:
            return None
        found = None
        mine = digest(given)
        for key in self.keys:
            if hmac.compare_digest(mine, key.sha256):
                found = key
        return found

    @classmethod
    def load(cls, single: str | None, keys_file: Path | None) -> KeyRing:
        """FACEID_API_KEY and FACEID_API_KEYS_FILE's keys. A bad line is a ValueError naming the
        file and line, never the key."""
        keys = [Key(LEGACY_ID, "admin", ANY_COLLECTION, digest(single))] if single is not None else []
        if keys_file is not None:
            try:
                lines = Path(keys_file).read_text().splitlines()
            except OSError as exc:
                raise ValueError(f"FACEID_API_KEYS_FILE {keys_file}: {exc.strerror}") from exc
            for number, line in enumerate(lines, 1):
                if line.strip() and not line.lstrip().startswith("#"):
                    keys.append(_parse(line, f"{keys_file}:{number}"))
        return cls(keys)


def _parse(line: str, where: str) -> Key:
    fields = line.split()
    if len(fields) != 4:
        raise ValueError(f"{where}: expected '<key id> <role> <collection or *> <key or sha256:hex>', found {len(fields)} fields")
    key_id, role, collection, secret = fields
    if not KEY_ID.match(key_id):
        raise ValueError(f"{where}: a key id is 1-64 letters, digits or _.@-")
    if role not in ROLES:
        raise ValueError(f"{where}: role must be one of {', '.join(ROLES)}")
    if collection != ANY_COLLECTION and not COLLECTION.match(collection):
        raise ValueError(f"{where}: collection must be * or a collection name (lower-case letters, digits, _)")
    if DIGEST.match(secret):
        sha = bytes.fromhex(secret.split(":", 1)[1])
    elif len(secret) >= MIN_KEY_LENGTH:
        sha = digest(secret)
    else:
        raise ValueError(f"{where}: key {key_id}'s secret must be at least {MIN_KEY_LENGTH} characters, or sha256:<64 hex digits>")
    return Key(key_id, role, collection, sha)


# -- what each request needs ---------------------------------------------------------------------
ENROL_ROUTES = (("POST", "/enroll"), ("DELETE", "/persons/"), ("POST", "/unknowns/"), ("DELETE", "/unknowns/"))
ADMIN_ROUTES = (("POST", "/collections"), ("DELETE", "/collections/"), ("GET", "/export"), ("POST", "/import"), ("GET", "/audit"))


def required_role(method: str, path: str) -> Role:
    """The least role a request needs (routes not listed need `identify`)."""
    for listed, prefix in ADMIN_ROUTES:
        if method == listed and (path == prefix or (prefix.endswith("/") and path.startswith(prefix))):
            return "admin"
    for listed, prefix in ENROL_ROUTES:
        if method == listed and (path == prefix or (prefix.endswith("/") and path.startswith(prefix))):
            return "enrol"
    return "identify"


def collection_of(method: str, path: str, header: str | None, default: str) -> str | None:
    """The collection a request is about: the one a /collections/{name} path names, else the
    X-Collection header's, else the default. Creating a collection is about all of them; listing
    them about none (each key sees its own)."""
    if path == "/collections":
        return None if method in ("GET", "HEAD") else ANY_COLLECTION
    if path.startswith("/collections/"):
        return path.split("/")[2]
    return header if header else default
