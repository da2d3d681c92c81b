"""One streamed HTTP/1.1 request that we can abort at any moment (idle timeout, client gone)."""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import tornado.httputil
import tornado.netutil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient

_END = object()


class StreamedResponse(tornado.httputil.HTTPMessageDelegate):
    """The status and headers once they arrive, then the body chunk by chunk."""

    def __init__(self) -> None:
        self.status = 0
        self.headers = tornado.httputil.HTTPHeaders()
        self.headers_ready = asyncio.get_running_loop().create_future()
        self._chunks: asyncio.Queue = asyncio.Queue()
        self._stream = None
        self._task: asyncio.Task | None = None
        self.finished = False

    # HTTPMessageDelegate
    def headers_received(self, start_line, headers) -> None:
        self.status, self.headers = start_line.code, headers
        if not self.headers_ready.done():
            self.headers_ready.set_result(None)

    def data_received(self, chunk: bytes) -> None:
        self._chunks.put_nowait(chunk)

    def finish(self) -> None:
        self.finished = True
        self._chunks.put_nowait(_END)

    def on_connection_close(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._chunks.put_nowait(ConnectionError("the connection closed before the response ended"))
        if not self.headers_ready.done():
            self.headers_ready.set_exception(ConnectionError("the connection closed before any response"))

    async def next_chunk(self, timeout: float) -> bytes | None:
        """The next body bytes; None at the end; raise TimeoutError after `timeout` s of silence."""
        if not self._chunks.empty():
            item = self._chunks.get_nowait()
        else:
            # asyncio.timeout, not wait_for: no extra task per chunk on the hot path.
            async with asyncio.timeout(timeout):
                item = await self._chunks.get()
        if item is _END:
            return None
        if isinstance(item, Exception):
            raise item
        return item

    async def read_all(self, timeout: float, limit: int = 1 << 20) -> bytes:
        """The rest of the body (for error answers), at most `limit` bytes."""
        out = bytearray()
        while len(out) < limit:
            chunk = await self.next_chunk(timeout)
            if chunk is None:
                break
            out += chunk
        return bytes(out)

    def close(self) -> None:
        """Abort: close the connection to the upstream now."""
        if self._stream is not None and not self._stream.closed():
            self._stream.close()
        if self._task is not None and not self._task.done():
            self._task.cancel()


async def open_stream(url: str, method: str, headers: dict, body: bytes, connect_timeout: float,
                      header_timeout: float, resolver: tornado.netutil.Resolver | None = None) -> StreamedResponse:
    """Send the request and return once the response headers are in; the body follows."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    ssl_options = ssl.create_default_context() if https else None
    stream = await TCPClient(resolver=resolver).connect(parts.hostname, port, ssl_options=ssl_options,
                                                        timeout=connect_timeout, max_buffer_size=64 << 20)
    stream.set_nodelay(True)
    response = StreamedResponse()
    response._stream = stream
    connection = HTTP1Connection(stream, True, HTTP1ConnectionParameters(no_keep_alive=True, decompress=False))
    request_headers = tornado.httputil.HTTPHeaders({"Host": parts.netloc, "Connection": "close",
                                                    "Content-Length": str(len(body)), **headers})
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.write_headers(tornado.httputil.RequestStartLine(method, path, "HTTP/1.1"), request_headers)
        connection.write(body)
        connection.finish()
    except StreamClosedError:
        raise ConnectionError("the upstream closed the connection while we were sending") from None
    response._task = asyncio.ensure_future(_read(connection, response))
    try:
        await asyncio.wait_for(asyncio.shield(response.headers_ready), header_timeout)
    except BaseException:
        response.close()
        raise
    return response


async def _read(connection: HTTP1Connection, response: StreamedResponse) -> None:
    try:
        await connection.read_response(response)
        response.on_connection_close()   # no-op after a whole response; an error after a cut one
    except (StreamClosedError, tornado.httputil.HTTPInputError, asyncio.CancelledError):
        response.on_connection_close()
    except Exception as exc:  # noqa: BLE001 - surface it to the reader instead of losing it
        response._chunks.put_nowait(ConnectionError(f"reading the upstream response failed: {exc}"))
