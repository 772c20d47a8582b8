"""Where a collection's audit events go.

An event that records a write (an enrolment, a deletion, a purge, an import) is appended in the
write's own transaction (`Writes.audit`), so that no crash ever leaves a write without its row
or a row without its write. An event that records a read (identify, verify, detect, an export,
a refused request) changes nothing to pair it with: it waits in a bounded buffer that a thread
appends in one transaction every second, so a busy service does not pay a commit per identify;
a crash loses at most that second of reads, never a write's row.
"""

from __future__ import annotations

import logging
import threading

from app.gallery.records import AuditEntry, AuditEvent, AuditQuery, StoreError
from app.gallery.store import Store

COMMAND_LINE = "(command line)"  # the key id of what `faceid gallery ...` does: no API key is used there
FLUSH_S = 1.0
MAX_PENDING = 10_000  # events held while the store cannot take them; past this the oldest go, with a log line
log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, store: Store, flush_s: float = FLUSH_S) -> None:
        self.store, self.flush_s = store, flush_s
        self._pending: list[AuditEvent] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, event: AuditEvent) -> None:
        with self._lock:
            self._pending.append(event)
            if len(self._pending) > MAX_PENDING:
                dropped = len(self._pending) - MAX_PENDING
                del self._pending[:dropped]
                log.error("audit log: the store has not taken events for a while; %d of the oldest read events dropped", dropped)

    def flush(self) -> None:
        """Append what waits (all or nothing: what the store refuses waits for the next flush)."""
        with self._lock:
            events, self._pending = self._pending, []
        try:
            self.store.append_audit(events)
        except StoreError as exc:
            with self._lock:
                self._pending[:0] = events
            log.warning("audit log: %d events wait for the store (%s)", len(events), exc)

    def page(self, query: AuditQuery, offset: int, limit: int) -> tuple[list[AuditEntry], int]:
        """What the log holds, the waiting events included."""
        self.flush()
        return self.store.audit_page(query, offset, limit)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="faceid-audit", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5)
        self.flush()

    def _run(self) -> None:
        while not self._stopping.wait(self.flush_s):
            self.flush()
