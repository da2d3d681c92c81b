"""One kept-alive HTTP/1.1 connection: sends a request, parses its response (every framing), feeds the body."""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING

from server.upstream.http.response import HttpResponse

if TYPE_CHECKING:
    from server.upstream.http.client import HttpClient

MAX_HEAD_BYTES = 64 << 10     # a response head longer than this is not Kimi's
MAX_CHUNK_LINE = 1 << 10

# Parser states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE = range(7)


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: sends a request, parses its response, then waits in the pool."""

    def __init__(self, client: HttpClient, key: tuple) -> None:
        self._client, self.key = client, key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self._buffer = bytearray()
        self._response: HttpResponse | None = None
        self._method = ""
        self._state = _HEAD
        self._remaining = 0
        self._reusable = False
        self._decoder = None
        self._paused = False
        self.answered = False     # a byte of the current response has arrived
        self.grace_timer: asyncio.TimerHandle | None = None

    def send(self, request: bytes, method: str) -> HttpResponse:
        """Write a whole request; the returned response fills in as its bytes arrive."""
        response = self._response = HttpResponse(self)
        self._method, self._state, self.answered = method, _HEAD, False
        self.transport.write(request)
        return response

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.Transport) -> None:
        """Keep the transport the loop connected."""
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        """Parse what arrived; a protocol error fails the response and drops the connection."""
        if self._response is None:
            self.abort()   # bytes nobody asked for: this connection cannot be trusted with a request
            return
        self.answered = True
        self._buffer += data
        try:
            self._parse()
        except ValueError as exc:
            self._broken(str(exc))

    def eof_received(self) -> bool:
        """Close our side too (returning False): a half-open connection is of no use."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Leave the pool; end a read-until-close body, fail any other unfinished one."""
        self.closed = True
        self._cancel_grace()
        self._client.forget(self)
        response, self._response = self._response, None
        if response is None:
            return
        if self._state == _UNTIL_CLOSE:
            self._flush_decoder(response)
            response._end()
        else:
            response._fail(ConnectionError("the connection closed before the response ended"))

    # Flow control and teardown.
    def resume(self) -> None:
        """Read from the socket again once the reader has caught up."""
        if self._paused and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        """Drop the connection now, without a graceful close."""
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def _broken(self, why: str) -> None:
        """Kimi sent something that is not HTTP/1.1: fail the response and drop the connection."""
        response, self._response = self._response, None
        self.abort()
        if response is not None:
            response._fail(ConnectionError(f"Kimi's response is not valid HTTP/1.1: {why}"))

    # The response parser.
    def _parse(self) -> None:
        """Advance the state machine over the buffered bytes, as far as they go."""
        buffer = self._buffer
        while self._response is not None and buffer:
            state = self._state
            if state == _HEAD:
                head = take_through(buffer, b"\r\n\r\n", MAX_HEAD_BYTES, "the response head")
                if head is None:
                    return
                self._head(head)
            elif state == _LENGTH or state == _CHUNK_DATA:
                take = min(self._remaining, len(buffer))
                data = bytes(buffer[:take])
                del buffer[:take]
                self._remaining -= take
                self._deliver(data)
                if not self._remaining:
                    if state == _LENGTH:
                        self._complete()
                    else:
                        self._state = _CHUNK_END
            elif state == _CHUNK_SIZE:
                line = take_through(buffer, b"\r\n", MAX_CHUNK_LINE, "a chunk size line")
                if line is None:
                    return
                size = int(line.split(b";", 1)[0].strip() or b"x", 16)
                if size < 0:
                    raise ValueError("a negative chunk size")
                self._remaining, self._state = size, (_CHUNK_DATA if size else _TRAILER)
            elif state == _CHUNK_END:
                if len(buffer) < 2:
                    return
                if buffer[:2] != b"\r\n":
                    raise ValueError("a chunk does not end with CRLF")
                del buffer[:2]
                self._state = _CHUNK_SIZE
            elif state == _TRAILER:
                line = take_through(buffer, b"\r\n", MAX_HEAD_BYTES, "a trailer line")
                if line is None:
                    return
                if not line:
                    self._complete()
            else:   # _UNTIL_CLOSE
                data = bytes(buffer)
                buffer.clear()
                self._deliver(data)

    def _head(self, head: bytes) -> None:
        """Read the status line and headers; choose the body's framing and decoding."""
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        if not version.startswith(b"HTTP/1."):
            raise ValueError("no HTTP/1.x status line")
        status = int(rest[:3])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise ValueError("a header line without a colon")
            key, text = name.strip().lower().decode("latin-1"), value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        if 100 <= status < 200:
            if status == 101:
                raise ValueError("an unexpected protocol switch")
            return   # an interim answer (100 Continue): the real head follows
        response = self._response
        response.status, response.headers = status, headers
        self._reusable = version == b"HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        encoding = headers.get("content-encoding", "").strip().lower()
        compressed = encoding in ("gzip", "deflate", "x-gzip")
        self._decoder = zlib.decompressobj(15 + 32) if compressed and self._client.decompress else None
        response._ready.set_result(None)
        if self._method == "HEAD" or status in (204, 304):
            self._complete()
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._state = _CHUNK_SIZE
        elif "content-length" in headers:
            self._remaining = int(headers["content-length"])
            if self._remaining < 0:
                raise ValueError("a negative Content-Length")
            self._state = _LENGTH
            if not self._remaining:
                self._complete()
        else:
            self._state, self._reusable = _UNTIL_CLOSE, False

    def _deliver(self, data: bytes) -> None:
        """Decode body bytes and hand them to the response; pause reading while its reader is behind."""
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error:
                raise ValueError("the compressed body is corrupt") from None
        if data and self._response._feed(data) and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def _flush_decoder(self, response: HttpResponse) -> None:
        """Hand over what the decompressor still holds at the end of the body."""
        if self._decoder is not None:
            try:
                tail = self._decoder.flush()
            except zlib.error:
                tail = b""
            if tail:
                response._feed(tail)

    def _cancel_grace(self) -> None:
        """Stop the close_when_done() timer: the body ended in time."""
        if self.grace_timer is not None:
            self.grace_timer.cancel()
            self.grace_timer = None

    def _complete(self) -> None:
        """The body is whole: end the response and give the connection back to the pool (or drop it)."""
        self._cancel_grace()
        response, self._response = self._response, None
        self._flush_decoder(response)
        response._end()
        self._state = _HEAD
        if self._reusable and not self._buffer and not self.closed:
            self.resume()
            self._client.release(self)
        else:
            self.abort()



def take_through(buffer: bytearray, end: bytes, limit: int, what: str) -> bytes | None:
    """Cut what precedes `end` off the buffer (dropping `end` too); None while it is still coming."""
    at = buffer.find(end)
    if at < 0:
        if len(buffer) > limit:
            raise ValueError(f"{what} is too long")
        return None
    taken = bytes(buffer[:at])
    del buffer[:at + len(end)]
    return taken
