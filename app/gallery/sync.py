"""How a serving gallery learns that its store changed under it, and when a request must look.

Each store makes its own (`Store.watch`), given a callback (the gallery's `refresh`), never the
gallery itself:
- `LocalWatcher` (SQLite): another process writing the same file (`faceid gallery import`
  into a serving folder) is noticed by calling back every few seconds; a request always reads
  the store's version before it answers, which costs one small read.
- `ChangeFollower` (PostgreSQL): LISTENs on a connection of its own for the change log's
  announcements and calls back on each, so another replica's enrolment or delete is searchable
  within milliseconds. A request reads the log itself only while the follower is not listening
  (its connection dropped, the database restarting), so a replica that missed announcements
  catches up before it answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

from app.gallery.records import StoreError

log = logging.getLogger(__name__)
POLL_S = 5.0  # the follower also reads the log's head this often: a lost announcement costs at most this


class Sync(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def may_have_changed(self, applied: int) -> bool:
        """Whether the store may hold changes past `applied` (the version the index holds),
        so that a request must read it before answering."""
        ...


class Listener(Protocol):
    """A store's announcement channel, on a connection of its own (PostgresStore.listen)."""

    def head(self) -> int:
        """The newest committed version."""
        ...

    def announcements(self, timeout: float) -> Iterator[int]:
        """The versions announced within `timeout` seconds, as they come."""
        ...


def _call(on_change: Callable[[], object]) -> None:
    """The callback, with what can go wrong while the store is unreachable logged, not raised."""
    try:
        on_change()
    except StoreError as exc:  # a store that cannot be read now (a database restarting): the requests say so
        log.warning("could not check the gallery store for changes: %s", exc)


class Background:
    """A daemon thread running `work` until stopped; `stopping` is what the work waits on."""

    def __init__(self, work: Callable[[], None], name: str) -> None:
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=work, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


class LocalWatcher:
    """Calls back every `interval_s` on a thread of its own; requests always look."""

    def __init__(self, on_change: Callable[[], object], interval_s: float) -> None:
        self.on_change, self.interval_s = on_change, interval_s
        self._background = Background(self._run, "faceid-store-watcher")

    def start(self) -> None:
        self._background.start()

    def stop(self) -> None:
        self._background.stop()

    def may_have_changed(self, applied: int) -> bool:
        return True

    def _run(self) -> None:
        while not self._background.stopping.wait(self.interval_s):
            try:
                _call(self.on_change)
            except Exception:  # anything else is a bug: in full, and keep watching
                log.exception("could not check the gallery store for changes")


class ChangeFollower:
    """LISTENs for the change log's announcements and calls back on each; reconnects with
    backoff when the connection drops, and reads the log's head on connecting (announcements
    sent while it was away are not queued for it)."""

    def __init__(self, listen: Callable[[], AbstractContextManager[Listener]], on_change: Callable[[], object]) -> None:
        self.listen, self.on_change = listen, on_change
        self.listening = False
        self.announced = 0  # the newest version heard of
        self._background = Background(self._run, "faceid-change-follower")
        self._stopping = self._background.stopping

    def start(self) -> None:
        self._background.start()

    def stop(self) -> None:
        self._background.stop()

    def may_have_changed(self, applied: int) -> bool:
        return not self.listening or self.announced > applied

    def _announce(self, version: int) -> None:
        self.announced = max(self.announced, version)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                self._follow()
            except Exception as exc:  # the connection dropped, or a change could not be applied: retry from the log
                if self.listening:
                    log.warning("change follower stopped (%s: %s); requests read the log until it is back",
                                type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                self.listening = False
                self._stopping.wait(backoff)
                backoff = min(2 * backoff, 2.0)
            else:
                backoff = 0.1

    def _follow(self) -> None:
        with self.listen() as listener:
            self._announce(listener.head())  # what was missed while not listening
            self.on_change()  # not listening yet: this reads the log whatever was announced
            self.listening = True
            log.info("following the change log at %d", self.announced)
            polled = time.monotonic()
            while not self._stopping.is_set():
                for version in listener.announcements(timeout=0.5):
                    self._announce(version)
                    self.on_change()
                if time.monotonic() - polled > POLL_S:  # also proves the connection is alive
                    self._announce(listener.head())
                    polled = time.monotonic()
                self.on_change()
