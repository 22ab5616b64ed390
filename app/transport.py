"""HTTP/1.1 with limits: what uvicorn's httptools protocol leaves open, closed before a request reaches the app.

- Header size and count: the request line and headers together may hold ``header_bytes`` bytes and
  ``headers`` fields; beyond either the connection gets 431 and is closed (one 128 MB header used to be read in
  full, for seconds, stalling every other request).
- Header time: a connection has ``header_timeout_s`` to send a request's line and headers, from when it opens or
  its previous response ends (slowloris: a client trickling headers, or connecting and saying nothing, holds a
  connection forever); then 408 and close.
- Body time: ``body_timeout_s`` from the end of the headers to the end of the body (the request's own deadline
  covers the upload too: ``app.middleware``); then the connection is closed and the app sees a disconnect.
Connection count and keep-alive are uvicorn's own settings (``limit_concurrency``, ``timeout_keep_alive``), set
from the same service settings (``app.cli.service``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


@dataclass(frozen=True)
class HttpLimits:
    header_bytes: int = 16 * 1024
    headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0


def guarded_protocol(limits: HttpLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with these limits (pass as ``uvicorn.run(..., http=...)``)."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits = HttpLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.refused = False
        self.header_bytes = self.header_count = 0
        self.timer: asyncio.TimerHandle | None = None
        self.arm(self.limits.header_timeout_s, 408)

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            super().data_received(data)

    # -- parser callbacks ---------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_bytes = self.header_count = 0
        if self.timer is None:  # a pipelined request: its headers get their own time
            self.arm(self.limits.header_timeout_s, 408)

    def on_url(self, url: bytes) -> None:
        self.count(len(url), 0)
        if not self.refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.count(len(name) + len(value), 1)
        if not self.refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.refused:
            return
        self.arm(self.limits.body_timeout_s, None)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self.disarm()
        if not self.refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():  # keep-alive: the next request's headers have their time
            self.arm(self.limits.header_timeout_s, 408)

    # -- limits ---------------------------------------------------------------------------------------------------
    def count(self, size: int, fields: int) -> None:
        self.header_bytes += size
        self.header_count += fields
        if not self.refused and (
            self.header_bytes > self.limits.header_bytes or self.header_count > self.limits.headers
        ):
            self.refuse(431)

    def arm(self, seconds: float, status: int | None) -> None:
        self.disarm()
        self.timer = self.loop.call_later(seconds, self.expired, status)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def expired(self, status: int | None) -> None:
        """Out of time: before the headers, answer (408); during a body, just close (the app sees a disconnect)."""
        self.timer = None
        if status is None or (self.cycle is not None and not self.cycle.response_complete):
            self.refused = True
            self.transport.close()
        else:
            self.refuse(status)

    def refuse(self, status: int) -> None:
        """Answer ``status`` with connection: close, and read nothing more."""
        self.refused = True
        self.disarm()
        body = REASONS[status] + b"\n"
        head = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS[status]), b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n"]  # fmt: skip
        self.transport.write(b"".join(head) + body)
        self.transport.close()
