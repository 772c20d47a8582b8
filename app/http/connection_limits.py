"""Connections the server will hold: uvicorn's HTTP/1.1 protocol (h11) with the bounds it lacks.

uvicorn closes a kept-alive connection that sits idle between requests, and nothing else: a
client that sends its request head one byte at a time (slowloris), or its body at a trickle,
holds a socket and a descriptor for ever, and enough of them exhaust the process. Here:
- a request's head (request line and headers) must arrive within `header_timeout_s` of its
  first byte (or of the connection's opening): else 408, and the connection is closed;
- a head over `max_header_bytes` gets 431 (uvicorn's parser would reset the connection);
- a body must keep coming at `min_body_rate` bytes a second on average once `body_grace_s` has
  passed (time the server itself stops reading, being busy, does not count): else closed;
- past `max_connections` open connections, a new one gets 503 with Retry-After at once.
Refusals are written straight to the socket, then the connection is half-closed and what the
client still sends is read and dropped for a moment, so that it reads the answer instead of a
reset. Answers before a request's body is read (the API key, size, overload) stay in
app/http/guard.py, at the ASGI level.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.config import ConnectionLimits

log = logging.getLogger(__name__)
LINGER_S = 2.0  # after a refusal: how long what the client still sends is read and dropped
WATCH_EVERY_S = 1.0  # how often a request body's progress is checked
SPARE_DESCRIPTORS = 64  # kept below the process's limit for files, the store and the models
_PHRASES = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def capped_by_descriptors(limits: ConnectionLimits) -> ConnectionLimits:
    """These limits with the connection cap below what the process may open (RLIMIT_NOFILE)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft - SPARE_DESCRIPTORS >= limits.max_connections:
        return limits
    return ConnectionLimits(max(1, soft - SPARE_DESCRIPTORS), limits.header_timeout_s, limits.max_header_bytes,
                            limits.min_body_rate, limits.body_grace_s)


def protocol_with(limits: ConnectionLimits) -> type[H11Protocol]:
    """The protocol class to give uvicorn (`http=`), bound to these limits."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {"limits": limits})


class BoundedH11Protocol(H11Protocol):
    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._refused = False
        self._head_bytes, self._tail = 0, b""
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_watch: asyncio.TimerHandle | None = None
        self._body_bytes, self._body_clock, self._body_last = 0, 0.0, 0.0
        if len(self.connections) > self.limits.max_connections:
            log.warning("%d connections open: refusing a new one", len(self.connections) - 1)
            self._refuse(503, "too many connections are open; try again shortly", {"retry-after": "1"})
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._refused:  # the client has sent all it will: the refusal can be closed now
            self.transport.close()
        return None

    # -- the request head --------------------------------------------------------------------
    def _waiting_for_head(self) -> bool:
        return self.cycle is None or (self.cycle.response_complete and self.conn.their_state in (h11.IDLE, h11.DONE))

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped: see LINGER_S
        if not self._waiting_for_head():
            self._body_bytes += len(data)
            super().data_received(data)
            return
        if self._head_timer is None:  # the next request on a kept-alive connection starts
            self._arm_head_timer()
        if self._head_too_large(data):
            log.warning("a request head over %d bytes: 431", self.limits.max_header_bytes)
            self._refuse(431, f"the request's headers are over {self.limits.max_header_bytes} bytes")
            return
        before = self.cycle
        super().data_received(data)
        if self.cycle is not before and self.cycle is not None:  # the head is complete: a request began
            self._head_bytes, self._tail = 0, b""
            self._cancel_head_timer()
            self._start_body_watch()

    def _head_too_large(self, data: bytes) -> bool:
        """Whether the head, with `data`, passes the limit before it ends (a blank line)."""
        seen = self._tail + data
        end = seen.find(b"\r\n\r\n")
        used = self._head_bytes - len(self._tail) + (end + 4 if end >= 0 else len(seen))
        self._head_bytes += len(data)
        self._tail = seen[-3:]
        return used > self.limits.max_header_bytes

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._waiting_for_head() and not self.transport.is_closing():
            log.warning("a request head not complete after %.0f s: closing the connection", self.limits.header_timeout_s)
            self._refuse(408, f"the request's head did not arrive within {self.limits.header_timeout_s:g} s")

    # -- the request body --------------------------------------------------------------------
    def _start_body_watch(self) -> None:
        self._body_bytes, self._body_clock, self._body_last = 0, 0.0, time.monotonic()
        self._body_watch = self.loop.call_later(WATCH_EVERY_S, self._check_body)

    def _check_body(self) -> None:
        self._body_watch = None
        if self.cycle is None or not self.cycle.more_body or self.transport.is_closing():
            return  # the body is in (or the connection gone): nothing more to watch
        now = time.monotonic()
        if not self.flow.read_paused:  # the server not reading is not the client's slowness
            self._body_clock += now - self._body_last
        self._body_last = now
        owed = self.limits.min_body_rate * (self._body_clock - self.limits.body_grace_s)
        if self._body_bytes < owed:
            log.warning("a request body at %.0f bytes/s after %.0f s: closing the connection",
                        self._body_bytes / self._body_clock, self._body_clock)
            self.transport.close()  # the app's receive() then reports the client gone
            return
        self._body_watch = self.loop.call_later(WATCH_EVERY_S, self._check_body)

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        if self._body_watch is not None:
            self._body_watch.cancel()
            self._body_watch = None

    # -- refusals ----------------------------------------------------------------------------
    def _refuse(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        """Answer `status` on the socket, half-close it, drop what still comes, then close."""
        self._refused = True
        self._cancel_timers()
        body = json.dumps({"detail": detail}).encode()
        lines = [f"HTTP/1.1 {status} {_PHRASES[status]}", "content-type: application/json", f"content-length: {len(body)}",
                 "connection: close", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def uvicorn_options(limits: ConnectionLimits) -> dict[str, Any]:
    """What `faceid serve` passes to uvicorn for these limits: this protocol, and h11's own
    buffer limit above ours, so that an oversized head is answered 431 here, not reset there."""
    return {"http": protocol_with(capped_by_descriptors(limits)), "h11_max_incomplete_event_size": limits.max_header_bytes + (1 << 20)}
