"""Name resolution for upstream connections without a thread-pool hop per connection."""

from __future__ import annotations

import ipaddress
import socket
import time

import tornado.netutil

TTL_SECONDS = 60.0


class CachingResolver(tornado.netutil.Resolver):
    """IP literals answered at once; names resolved in the executor once a minute, not once a connection.

    Tornado's default resolver sends each lookup through a thread pool; with a new upstream connection
    per call, at hundreds of streams a second, that hop cost more CPU than the answers themselves.
    Kept-alive connections (server/upstream/http.py) now open far fewer, but bursts still open many.
    """

    def initialize(self) -> None:
        self._inner = tornado.netutil.DefaultExecutorResolver()
        self._cache: dict[tuple, tuple[float, list]] = {}

    async def resolve(self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC) -> list:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None:
            af = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            if family in (socket.AF_UNSPEC, af):
                return [(af, (host, port) if af == socket.AF_INET else (host, port, 0, 0))]
        key = (host, port, family)
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < TTL_SECONDS:
            return hit[1]
        addresses = await self._inner.resolve(host, port, family)
        self._cache[key] = (time.monotonic(), addresses)
        return addresses
