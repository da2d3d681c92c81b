"""Name resolution for upstream connections without a thread-pool hop per connection."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

TTL_SECONDS = 60.0


async def system_resolve(host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC) -> list:
    """The system's answer for a TCP connection to host:port, as [(family, address)]."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    return [(af, address) for af, _type, _proto, _name, address in infos]


def literal_address(host: str, port: int, family: socket.AddressFamily) -> list | None:
    """[(family, address)] for an IP literal of the wanted family, else None (a name, or another family)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    af = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    if family not in (socket.AF_UNSPEC, af):
        return None
    return [(af, (host, port) if af == socket.AF_INET else (host, port, 0, 0))]


class CachingResolver:
    """IP literals answered at once; names resolved in the executor once a minute, not once a connection.

    The loop's getaddrinfo runs in a thread pool; with a new upstream connection per call, at hundreds
    of streams a second, that hop cost more CPU than the answers themselves. Kept-alive connections
    (server/upstream/http/) now open far fewer, but bursts still open many.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple, tuple[float, list]] = {}

    async def resolve(self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC) -> list:
        """[(family, address)] for host:port, from the cache while it is under TTL_SECONDS old."""
        literal = literal_address(host, port, family)
        if literal is not None:
            return literal
        key = (host, port, family)
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < TTL_SECONDS:
            return hit[1]
        addresses = await system_resolve(host, port, family)
        self._cache[key] = (time.monotonic(), addresses)
        return addresses
