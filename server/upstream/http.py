"""HTTP/1.1 to Kimi on asyncio: kept-alive connections, bodies streamed as they arrive, abortable at once."""

from __future__ import annotations

import asyncio
import re
import ssl
import zlib
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

MAX_HEAD_BYTES = 64 << 10     # a response head longer than this is not Kimi's
MAX_CHUNK_LINE = 1 << 10
PAUSE_ABOVE = 1 << 20         # stop reading from Kimi while this much body waits for a slow reader
MAX_IDLE_PER_HOST = 256   # enough for the connections a burst of finished answers hands back at once
_LINE_BREAK = re.compile("[\r\n\0]")   # in a header, these would let it smuggle another header or request

# Parser states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE = range(7)


class UnsendableRequest(ValueError):
    """A request that cannot go on the wire (a line break or a non-Latin-1 character in a header)."""


@dataclass(frozen=True)
class Reply:
    """A whole response: status code, headers (lower-case names) and body."""

    code: int
    headers: dict
    body: bytes


class HttpResponse:
    """Status and headers once they arrive, then the body chunk by chunk; close() aborts."""

    def __init__(self, connection: _Connection) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}   # lower-case names; repeated headers joined with ", "
        self._connection: _Connection | None = connection   # None once the body is whole or aborted
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
            timer = waiter.get_loop().call_later(timeout, _expire, waiter)
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
        self._connection = None
        self._ended = True
        self._wake()

    def _fail(self, error: Exception) -> None:
        self._connection = None
        if self._ended or self._error is not None:
            return
        self._error = error
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()   # retrieved: an opener that gave up must not leave a loud orphan
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Connection(asyncio.Protocol):
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
        response = self._response = HttpResponse(self)
        self._method, self._state, self.answered = method, _HEAD, False
        self.transport.write(request)
        return response

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
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
        return False

    def connection_lost(self, exc: Exception | None) -> None:
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
        if self._paused and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()

    def _broken(self, why: str) -> None:
        response, self._response = self._response, None
        self.abort()
        if response is not None:
            response._fail(ConnectionError(f"Kimi's response is not valid HTTP/1.1: {why}"))

    # The response parser.
    def _parse(self) -> None:
        buffer = self._buffer
        while self._response is not None and buffer:
            state = self._state
            if state == _HEAD:
                head = _take_through(buffer, b"\r\n\r\n", MAX_HEAD_BYTES, "the response head")
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
                line = _take_through(buffer, b"\r\n", MAX_CHUNK_LINE, "a chunk size line")
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
                line = _take_through(buffer, b"\r\n", MAX_HEAD_BYTES, "a trailer line")
                if line is None:
                    return
                if not line:
                    self._complete()
            else:   # _UNTIL_CLOSE
                data = bytes(buffer)
                buffer.clear()
                self._deliver(data)

    def _head(self, head: bytes) -> None:
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
        self._decoder = zlib.decompressobj(15 + 32) if encoding in ("gzip", "deflate", "x-gzip") else None
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
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error:
                raise ValueError("the compressed body is corrupt") from None
        if data and self._response._feed(data) and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def _flush_decoder(self, response: HttpResponse) -> None:
        if self._decoder is not None:
            try:
                tail = self._decoder.flush()
            except zlib.error:
                tail = b""
            if tail:
                response._feed(tail)

    def _cancel_grace(self) -> None:
        if self.grace_timer is not None:
            self.grace_timer.cancel()
            self.grace_timer = None

    def _complete(self) -> None:
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


class HttpClient:
    """Requests to any http(s) URL over a small pool of kept-alive connections per host."""

    def __init__(self, resolver, connect_timeout: float, idle_seconds: float) -> None:
        self._resolver = resolver   # tornado.netutil.Resolver: resolve(host, port) -> [(family, address)]
        self._connect_timeout = connect_timeout
        self._idle_seconds = idle_seconds
        self._idle: dict[tuple, list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def open(self, url: str, method: str, headers: dict, body: bytes, header_timeout: float) -> HttpResponse:
        """Send the request; return once the response head is in, with the body to follow.

        Raises TimeoutError, OSError (ConnectionError when the connection breaks) or UnsendableRequest.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UnsendableRequest(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        request = _request_bytes(method, parts, headers, body)
        while True:
            connection = self._take_idle(key)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(key)
            response = connection.send(request, method)
            timer = asyncio.get_running_loop().call_later(header_timeout, _expire, response._ready)
            try:
                await response._ready
                return response
            except ConnectionError:
                if reused and not connection.answered:
                    # Kimi closed this idle connection as we reused it, so the request went nowhere:
                    # send it again on a new connection (a fresh connection is not retried).
                    continue
                raise
            except BaseException:
                response.close()
                raise
            finally:
                timer.cancel()

    async def fetch(self, url: str, method: str, headers: dict, body: bytes, timeout: float,
                    limit: int = 16 << 20) -> Reply:
        """One whole call within `timeout` s; raises as open() does."""
        async with asyncio.timeout(timeout):
            response = await self.open(url, method, headers, body, timeout)
            try:
                data = await response.read_all(timeout, limit)
            finally:
                response.close()
        return Reply(response.status, response.headers, data)

    def release(self, connection: _Connection) -> None:
        """Keep a connection whose response came whole, for the next call to the same host."""
        idle = self._idle.setdefault(connection.key, [])
        if self._idle_seconds <= 0 or len(idle) >= MAX_IDLE_PER_HOST:
            connection.abort()
            return
        idle.append(connection)
        connection.idle_timer = asyncio.get_running_loop().call_later(self._idle_seconds, connection.abort)

    def forget(self, connection: _Connection) -> None:
        """A closed connection leaves the pool."""
        if connection.idle_timer is not None:
            connection.idle_timer.cancel()
            connection.idle_timer = None
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    def close(self) -> None:
        """Close every idle connection (at shutdown)."""
        for idle in list(self._idle.values()):
            for connection in list(idle):
                connection.abort()
        self._idle.clear()

    def _take_idle(self, key: tuple) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            connection.idle_timer.cancel()
            connection.idle_timer = None
            if not connection.closed and not connection.transport.is_closing():
                return connection
        return None

    async def _connect(self, key: tuple) -> _Connection:
        scheme, host, port = key
        if scheme == "https" and self._ssl is None:
            self._ssl = ssl.create_default_context()
        loop = asyncio.get_running_loop()
        error: OSError = OSError(f"no address for {host}")
        async with asyncio.timeout(self._connect_timeout):
            for _family, address in await self._resolver.resolve(host, port):
                try:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(self, key), address[0], address[1],
                        ssl=self._ssl if scheme == "https" else None,
                        server_hostname=host if scheme == "https" else None)
                    return connection
                except OSError as exc:
                    error = exc
        raise error


def _take_through(buffer: bytearray, end: bytes, limit: int, what: str) -> bytes | None:
    """Cut what precedes `end` off the buffer (dropping `end` too); None while it is still coming."""
    at = buffer.find(end)
    if at < 0:
        if len(buffer) > limit:
            raise ValueError(f"{what} is too long")
        return None
    taken = bytes(buffer[:at])
    del buffer[:at + len(end)]
    return taken


def _request_bytes(method: str, parts: SplitResult, headers: dict, body: bytes) -> bytes:
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    fields = [f"{name}: {value}" for name, value in headers.items()]
    if _LINE_BREAK.search("".join(fields)):   # one scan of all headers: this runs for every call to Kimi
        name = next(name for name, value in headers.items() if _LINE_BREAK.search(f"{name}{value}"))
        raise UnsendableRequest(f"the {name} header holds a line break")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}", *fields,
             f"Content-Length: {len(body)}"]
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    except UnicodeEncodeError:
        raise UnsendableRequest("a header holds a character HTTP cannot carry") from None
