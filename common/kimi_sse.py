"""Incremental parser for Kimi's SSE: bytes in any split, complete JSON events out."""

from __future__ import annotations

import logging

import orjson

log = logging.getLogger(__name__)


class SseParser:
    """Feed it bytes as they arrive; it returns the events completed so far.

    Events are cut on bytes (a blank line ends one), so a line or a UTF-8 character split across
    network chunks is simply waiting in the buffer; text is decoded only once an event is whole.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict]:
        self._buffer += data
        events = []
        while True:
            end, sep = self._boundary()
            if end < 0:
                return events
            block = bytes(self._buffer[:end])
            del self._buffer[:end + sep]
            event = _parse_block(block)
            if event is not None:
                events.append(event)

    def _boundary(self) -> tuple[int, int]:
        # An event ends at a blank line: \n\n, or \r\n\r\n from a CRLF server.
        lf = self._buffer.find(b"\n\n")
        crlf = self._buffer.find(b"\r\n\r\n")
        if crlf >= 0 and (lf < 0 or crlf < lf):
            return crlf, 4
        return lf, 2

    @property
    def pending(self) -> int:
        """Bytes of an event not yet complete (non-zero at the end means a cut stream)."""
        return len(self._buffer.strip())


def _parse_block(block: bytes) -> dict | None:
    data = []
    for line in block.split(b"\n"):
        line = line.rstrip(b"\r")
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        # `event:`, `id:`, `retry:` and `:` comments carry nothing Kimi relies on.
    if not data:
        return None
    try:
        event = orjson.loads(b"\n".join(data))
    except orjson.JSONDecodeError:
        log.debug("skipping a non-JSON SSE event of %d bytes", len(block))
        return None
    return event if isinstance(event, dict) else None
