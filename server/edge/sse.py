"""The one SSE writer: frames out as each batch of events is rendered, keepalives during silence, errors as frames."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Protocol

import tornado.iostream
import tornado.web

from server.core.errors import Failure
from server.core.events import Event, Finish

log = logging.getLogger("server.chat")

KEEPALIVE = b": keepalive\n\n"


class Renderer(Protocol):
    """What a dialect's stream renderer offers the writer."""

    def head(self) -> bytes: ...
    def batch(self, events: list[Event]) -> bytes: ...
    def tail(self, usage) -> bytes: ...
    def error(self, failure: Failure) -> bytes: ...


class SseWriter:
    """Writes one streamed answer to a Tornado handler; pacing (when to flush, keepalives) is decided here."""

    def __init__(self, handler: tornado.web.RequestHandler) -> None:
        self.handler = handler   # its `client_gone` flag is set by on_connection_close, and here

    @property
    def client_gone(self) -> bool:
        return self.handler.client_gone

    def start(self) -> None:
        handler = self.handler
        handler.set_header("Content-Type", "text/event-stream; charset=utf-8")
        handler.set_header("Cache-Control", "no-cache")
        handler.set_header("X-Accel-Buffering", "no")

    async def stream(self, renderer: Renderer, batches: AsyncIterator[list[Event]]) -> None:
        """Head, then one write per batch, then the tail; a Failure after the head is an error frame and the end."""
        self.start()
        finish = None
        try:
            await self._send(renderer.head())
            async for batch in batches:
                if not batch:
                    await self._send(KEEPALIVE)
                    continue
                for event in batch:
                    if isinstance(event, Finish):
                        finish = event
                if data := renderer.batch(batch):
                    # One write per upstream read, however many events it held.
                    await self._send(data)
            # The last frames leave with the end of the response, in one write.
            self.handler.write(renderer.tail(finish.usage if finish else None))
        except tornado.iostream.StreamClosedError:
            return
        except Failure as failure:
            if self.client_gone:
                return
            # Headers are out: the error goes in a frame, and no [DONE] follows a broken answer.
            log.warning("stream failed after it started: %s", failure.message)
            await self._send(renderer.error(failure), swallow=True)
        self.handler.finish()

    async def _send(self, frame: bytes, swallow: bool = False) -> None:
        """Write and flush; raise StreamClosedError once the caller is gone (unless told to swallow it)."""
        self.handler.write(frame)
        try:
            await self.handler.flush()
        except tornado.iostream.StreamClosedError:
            self.handler.client_gone = True
            if not swallow:
                raise
            return
        if self.client_gone and not swallow:
            raise tornado.iostream.StreamClosedError()
