"""Several independent galleries in one service: the default collection (the gallery the
service always had, its data where it always was) and any number of named ones, each a whole
gallery of its own (store, indexes, snapshot, sync): a collection's persons and faces are in a
store no other collection reads, so two collections never see each other's faces, whatever
their person ids.

The registry of named collections is a table in the default collection's store, so every
replica of a PostgreSQL deployment sees the same ones; a replica opens a collection's gallery
the first time a request names it, and forgets it once the registry no longer lists it
(deleted by another replica).
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from app.gallery.gallery import Gallery
from app.gallery.records import CollectionRow, StoreError, now
from app.schemas import COLLECTION_PATTERN

DEFAULT = "default"
NAME_PATTERN = COLLECTION_PATTERN
log = logging.getLogger(__name__)


class CollectionNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} not found")


class DefaultCollection(StoreError):
    """What cannot be done to the default collection (deleting it)."""


@dataclass(frozen=True)
class Collection:
    row: CollectionRow
    gallery: Gallery

    @property
    def name(self) -> str:
        return self.row.name


class Collections:
    """`open_gallery(name)` opens (creating when needed) a named collection's gallery;
    `folder(name)` is where its local files are (its snapshot; on SQLite its store too)."""

    def __init__(self, default: Gallery, open_gallery: Callable[[str], Gallery], folder: Callable[[str], Path]) -> None:
        self.default = Collection(CollectionRow(DEFAULT, ""), default)
        self._open, self._folder = open_gallery, folder
        self._open_ones: dict[str, Collection] = {}
        self._lock = threading.Lock()
        self._following = False

    def get(self, name: str) -> Collection:
        """The collection `name`, opened if this process has not yet; CollectionNotFound unless registered."""
        if name == DEFAULT:
            return self.default
        row = self.row(name)
        with self._lock:
            held = self._open_ones.get(name)
            if row is None:
                if held is not None:  # deleted elsewhere: let go of it
                    del self._open_ones[name]
                    held.gallery.close()
                raise CollectionNotFound(name)
            if held is None:
                held = self._open_ones[name] = Collection(row, self._opened(name))
            elif held.row != row:
                held = self._open_ones[name] = replace(held, row=row)
            return held

    def row(self, name: str) -> CollectionRow | None:
        return next((r for r in self.default.gallery.store.collections() if r.name == name), None)

    def rows(self) -> list[CollectionRow]:
        """Every collection, the default first."""
        return [self.default.row, *self.default.gallery.store.collections()]

    def create(self, name: str, threshold: float | None = None, verify_threshold: float | None = None,
               photo_threshold: float | None = None) -> Collection:
        """Register a collection and make its store (CollectionExists if the name is taken)."""
        if name == DEFAULT:
            raise DefaultCollection(DEFAULT, "the default collection always exists")
        row = CollectionRow(name, now(), threshold, verify_threshold, photo_threshold)
        self.default.gallery.store.add_collection(row)
        try:
            return self.get(name)
        except BaseException:
            self.default.gallery.store.remove_collection(name)  # its store could not be made: not registered either
            raise

    def delete(self, name: str) -> None:
        """Unregister a collection, then remove its store and its files for good."""
        if name == DEFAULT:
            raise DefaultCollection(DEFAULT, "the default collection is not deleted; delete its persons instead")
        collection = self.get(name)  # CollectionNotFound when there is none
        self.default.gallery.store.remove_collection(name)
        with self._lock:
            self._open_ones.pop(name, None)
        collection.gallery.stop_following()
        collection.gallery.store.destroy()
        shutil.rmtree(self._folder(name), ignore_errors=True)
        log.info("collection %s deleted", name)

    def _opened(self, name: str) -> Gallery:
        gallery = self._open(name)
        if self._following:
            gallery.follow()
        return gallery

    def follow(self) -> None:
        """Follow every open gallery's store, and each one opened from now on."""
        self._following = True
        for collection in self.all_open():
            collection.gallery.follow()

    def all_open(self) -> list[Collection]:
        with self._lock:
            return [self.default, *self._open_ones.values()]

    def save_snapshots(self) -> None:
        for collection in self.all_open():
            try:
                collection.gallery.save_snapshot()
            except OSError as exc:
                log.warning("index of collection %s not saved (%s): the next start rebuilds it", collection.name, exc)

    def close(self) -> None:
        for collection in self.all_open():
            collection.gallery.close()
