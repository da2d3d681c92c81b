"""The response a caller holds: status and headers, then the body chunk by chunk, with back-pressure."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.upstream.http.connection import Connection

PAUSE_ABOVE = 1 << 20         # stop reading from Kimi while this much body waits for a slow reader


@dataclass(frozen=True)
class Reply:
    """A whole response: status code, headers (lower-case names) and body."""

    code: int
    headers: dict
    body: bytes


class HttpResponse:
    """Status and headers once they arrive, then the body chunk by chunk; close() aborts."""

    def __init__(self, connection: Connection) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}   # lower-case names; repeated headers joined with ", "
        self._connection: Connection | None = connection   # None once the body is whole or aborted
        self._ready = asyncio.get_running_loop().create_future()
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._waiter: asyncio.Future | None = None
        self._ended = False
        self._error: Exception | None = None
        self._discard = False   # set by close_when_done: the rest of the body is read and dropped

    async def next_chunk(self, timeout: float) -> bytes | None:
        """Body bytes received since the last call; None at the end.

        Raises TimeoutError after `timeout` s without a byte and ConnectionError if the body was cut.
        """
        if not self._pending and not self._ended and self._error is None:
            # One timer and one future, not a task: this runs once per upstream event.
            self._waiter = waiter = asyncio.get_running_loop().create_future()
            timer = waiter.get_loop().call_later(timeout, expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            if self._connection is not None:
                self._connection.resume()
            return data
        if self._error is not None:
            raise self._error
        return None

    async def read_all(self, timeout: float, limit: int = 1 << 20) -> bytes:
        """The rest of the body (for error answers and small JSON), at most `limit` bytes."""
        out = bytearray()
        while len(out) < limit:
            chunk = await self.next_chunk(timeout)
            if chunk is None:
                break
            out += chunk
        return bytes(out[:limit])

    def close_when_done(self, grace: float = 2.0) -> None:
        """We need no more of the body: keep the connection if the rest arrives within `grace` s, else drop it.

        An answer's last event often comes a moment before the end of its HTTP body; aborting then
        would throw away a connection that is about to be reusable.
        """
        connection = self._connection
        if connection is None:
            return
        self._pending.clear()
        self._pending_bytes = 0
        self._discard = True
        connection.resume()
        connection.grace_timer = asyncio.get_running_loop().call_later(grace, connection.abort)

    def close(self) -> None:
        """Abort: drop the connection now unless the body already came whole (then it is reused)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abort()
        if not self._ended and self._error is None:
            self._fail(ConnectionError("the response was closed by us"))

    # Fed by the connection.
    def _feed(self, data: bytes) -> bool:
        """Queue body bytes for the reader; True when the reader is far enough behind to stop reading."""
        if self._discard:
            return False
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._wake()
        return self._pending_bytes > PAUSE_ABOVE

    def _end(self) -> None:
        """The body came whole."""
        self._connection = None
        self._ended = True
        self._wake()

    def _fail(self, error: Exception) -> None:
        """The response broke: the head's waiter and the body's reader both get `error`."""
        self._connection = None
        if self._ended or self._error is not None:
            return
        self._error = error
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()   # retrieved: an opener that gave up must not leave a loud orphan
        self._wake()

    def _wake(self) -> None:
        """Let a reader waiting in next_chunk() run."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def expire(waiter: asyncio.Future) -> None:
    """A timer's callback: fail the waiter with TimeoutError unless it already has its answer."""
    if not waiter.done():
        waiter.set_exception(TimeoutError())
