"""The collections resource: several independent galleries in one service."""

from __future__ import annotations

from app.gallery.collections import Collection, CollectionNotFound, Collections
from app.gallery.records import CollectionRow
from app.http.keys import Key
from app.schemas import CollectionCreate, CollectionPublic


def public(row: CollectionRow, counts: tuple[int, int] | None = None) -> CollectionPublic:
    return CollectionPublic(name=row.name, created_at=row.created_at or None, threshold=row.threshold, verify_threshold=row.verify_threshold,
                            photo_threshold=row.photo_threshold, persons=counts[0] if counts else None, faces=counts[1] if counts else None)


def list_collections(collections: Collections, key: Key | None) -> list[CollectionPublic]:
    """The collections the key may use (every one when no key is configured)."""
    return [public(row) for row in collections.rows() if key is None or key.sees(row.name)]


def one(collection: Collection) -> CollectionPublic:
    return public(collection.row, collection.gallery.store.counts())


def get_collection(collections: Collections, name: str, key: Key | None) -> CollectionPublic:
    if key is not None and not key.sees(name):  # the guard refused it already; a key never learns of others
        raise CollectionNotFound(name)
    return one(collections.get(name))


def create_collection(collections: Collections, body: CollectionCreate) -> CollectionPublic:
    return one(collections.create(body.name, body.threshold, body.verify_threshold, body.photo_threshold))


def delete_collection(collections: Collections, name: str) -> None:
    collections.delete(name)
