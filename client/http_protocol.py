"""uvicorn's HTTP protocol with a deadline on each request's head.

A connection that has not sent complete headers within `HeadDeadline.seconds` of opening (or of its
previous response) is closed. uvicorn bounds idle keep-alive connections, but not a client sending
its headers a byte at a time. A module-level class (its deadline a class attribute set at start), so
uvicorn can hand it to spawned workers by name.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeadDeadline(HttpToolsProtocol):
    seconds: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.seconds, self._expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expired(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def head_deadline(seconds: float) -> type[HeadDeadline]:
    """The protocol with its own deadline (one server in this process; tests)."""
    return type("HeadDeadline", (HeadDeadline,), {"seconds": seconds})
