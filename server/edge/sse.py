"""The one SSE writer: frames out as each batch of events is rendered, keepalives during silence, errors as frames."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Protocol

import tornado.iostream
import tornado.web

from server.core.errors import INTERNAL, Failure
from server.core.events import Event, Failed, Finish

log = logging.getLogger("server.chat")

KEEPALIVE = b": keepalive\n\n"


class Renderer(Protocol):
    """What a dialect's stream renderer offers the writer (a Failed event renders as its error frame)."""

    def head(self) -> bytes: ...
    def batch(self, events: list[Event]) -> bytes: ...
    def tail(self, usage) -> bytes: ...
    def error(self, failure: Failure) -> bytes: ...


class SseWriter:
    """Writes one streamed answer to a handler with a `client_gone` flag (set on disconnect, and here)."""

    def __init__(self, handler: tornado.web.RequestHandler) -> None:
        self.handler = handler

    def start(self) -> None:
        handler = self.handler
        handler.set_header("Content-Type", "text/event-stream; charset=utf-8")
        handler.set_header("Cache-Control", "no-cache")
        handler.set_header("X-Accel-Buffering", "no")

    async def stream(self, renderer: Renderer, batches: AsyncIterator[list[Event]]) -> None:
        """Head, one write per batch, the tail; after a failure its error frame ends the stream (no [DONE])."""
        self.start()
        finish = None
        try:
            await self._send(renderer.head())
            async for batch in batches:
                if not batch:
                    await self._send(KEEPALIVE)
                    continue
                last = batch[-1]
                if isinstance(last, Failed):
                    await self._fail(renderer, batch, last.failure)
                    return
                if isinstance(last, Finish):
                    # The last frames leave with the end of the response, in one write.
                    finish = last
                    self.handler.write(renderer.batch(batch))
                    break
                if data := renderer.batch(batch):
                    # One write per upstream read, however many events it held.
                    await self._send(data)
            if finish is None:
                if self.handler.client_gone:
                    return   # the answer stopped because the caller hung up
                raise RuntimeError("the answer ended without a Finish or a Failed event")
            self.handler.write(renderer.tail(finish.usage))
        except tornado.iostream.StreamClosedError:
            return
        except Exception:
            # A bug of ours after the head went out: say so in a frame rather than end as if complete.
            log.exception("stream failed after it started")
            await self._send(renderer.error(Failure(INTERNAL, "Internal server error.", code="internal_error")),
                             swallow=True)
        self.handler.finish()

    async def _fail(self, renderer: Renderer, batch: list[Event], failure: Failure) -> None:
        if self.handler.client_gone:
            return
        log.warning("stream failed after it started: %s", failure.message)
        await self._send(renderer.batch(batch), swallow=True)
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
        if self.handler.client_gone and not swallow:
            raise tornado.iostream.StreamClosedError()
