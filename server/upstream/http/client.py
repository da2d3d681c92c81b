"""The HTTP client: opens requests over a small pool of kept-alive connections per host."""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol
from urllib.parse import urlsplit

from server.upstream.http.connection import Connection
from server.upstream.http.request import UnsendableRequest, request_bytes
from server.upstream.http.response import HttpResponse, Reply, expire

MAX_IDLE_PER_HOST = 256   # enough for the connections a burst of finished answers hands back at once


class Resolver(Protocol):
    """Where a host's connections go: [(family, address)], address[0] the IP and address[1] the port."""

    async def resolve(self, host: str, port: int) -> list: ...


class HttpClient:
    """Requests to any http(s) URL over a small pool of kept-alive connections per host."""

    def __init__(self, resolver: Resolver, connect_timeout: float, idle_seconds: float,
                 decompress: bool = True) -> None:
        self._resolver = resolver
        # False: gzip/deflate bodies come through as sent, for a caller that decodes them within its own limit.
        self.decompress = decompress
        self._connect_timeout = connect_timeout
        self._idle_seconds = idle_seconds
        self._idle: dict[tuple, list[Connection]] = {}
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
        request = request_bytes(method, parts, headers, body)
        while True:
            connection = self._take_idle(key)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(key)
            response = connection.send(request, method)
            timer = asyncio.get_running_loop().call_later(header_timeout, expire, response._ready)
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

    def release(self, connection: Connection) -> None:
        """Keep a connection whose response came whole, for the next call to the same host."""
        idle = self._idle.setdefault(connection.key, [])
        if self._idle_seconds <= 0 or len(idle) >= MAX_IDLE_PER_HOST:
            connection.abort()
            return
        idle.append(connection)
        connection.idle_timer = asyncio.get_running_loop().call_later(self._idle_seconds, connection.abort)

    def forget(self, connection: Connection) -> None:
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

    def _take_idle(self, key: tuple) -> Connection | None:
        """A pooled connection to `key` that is still open, or None."""
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            connection.idle_timer.cancel()
            connection.idle_timer = None
            if not connection.closed and not connection.transport.is_closing():
                return connection
        return None

    async def _connect(self, key: tuple) -> Connection:
        """A new connection to the first of the host's addresses that answers, within the connect timeout."""
        scheme, host, port = key
        if scheme == "https" and self._ssl is None:
            self._ssl = ssl.create_default_context()
        loop = asyncio.get_running_loop()
        error: OSError = OSError(f"no address for {host}")
        async with asyncio.timeout(self._connect_timeout):
            for _family, address in await self._resolver.resolve(host, port):
                try:
                    _, connection = await loop.create_connection(
                        lambda: Connection(self, key), address[0], address[1],
                        ssl=self._ssl if scheme == "https" else None,
                        server_hostname=host if scheme == "https" else None)
                    return connection
                except OSError as exc:
                    error = exc
        raise error
