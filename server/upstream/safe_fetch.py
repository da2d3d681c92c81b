"""Download a user-supplied URL without letting it reach our own network (SSRF-safe)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import zlib
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from server.upstream.http import HttpClient, HttpResponse
from server.upstream.resolver import system_resolve

log = logging.getLogger("server.fetch")

# Test-only: host:port pairs treated as public (the suite's own file server on 127.0.0.1).
TEST_ALLOW_ENV = "KIMI_BRIDGE_TESTING_FETCH_ALLOW"
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
HEADERS = {"User-Agent": "kimi-bridge/1.0 (+file fetch)", "Accept": "*/*"}
# What a URL's path and query may hold as it is; the rest (spaces, non-ASCII) is percent-encoded for the wire.
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class FetchRefused(Exception):
    """The URL (or a redirect hop) points where we never connect."""


class FetchFailed(Exception):
    """The download itself failed: unreachable, an error status, too slow, or too large."""


@dataclass(frozen=True)
class Fetched:
    """A downloaded body, its media type (lower case, no parameters) and the URL it finally came from."""

    data: bytes
    content_type: str
    url: str


def public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True only for globally routable unicast addresses, after unwrapping IPv4 inside IPv6."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return public_address(ip.ipv4_mapped)
        if ip in _NAT64:
            return public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip in _NAT64_LOCAL or ip.teredo is not None:
            return False
        if ip.sixtofour is not None:
            return public_address(ip.sixtofour)
    return ip.is_global and not ip.is_multicast


class PublicOnlyResolver:
    """Resolves like the system, then refuses the name if any address is not public.

    Checking the addresses we actually connect to (not the URL's spelling) covers decimal, octal
    and short IPv4 forms, names that resolve to loopback, and DNS rebinding between check and use.
    """

    def __init__(self, allow: frozenset[tuple[str, int]] = frozenset()) -> None:
        self._allow = allow

    async def resolve(self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC) -> list:
        """[(family, address)] for host:port; raises FetchRefused if any of them is not public."""
        results = await system_resolve(host, port, family)
        for _family, address in results:
            ip = ipaddress.ip_address(address[0].split("%")[0])
            if (str(ip), port) in self._allow:
                continue
            if not public_address(ip):
                raise FetchRefused(f"{host} resolves to a non-public address")
        return results


class SafeFetcher:
    """GETs http(s) URLs on allowed ports to public addresses, re-checking every redirect hop."""

    def __init__(self, max_bytes: int, timeout: float, allowed_ports: frozenset[int],
                 environ: dict | None = None) -> None:
        environ = os.environ if environ is None else environ
        allow = frozenset(_parse_allow(environ.get(TEST_ALLOW_ENV, "")))
        if allow:
            log.warning("%s is set: fetching from %s is allowed (tests only)", TEST_ALLOW_ENV, sorted(allow))
        self._allow = allow
        self._max_bytes, self._timeout, self._ports = max_bytes, timeout, allowed_ports
        # A private client: its own resolver, no environment proxies, no kept-alive connections (downloads
        # are rare, and a pooled socket would outlive the check of where it points), and compressed bodies
        # left to _read(), which stops decoding at the size limit (a small gzip can hold gigabytes).
        self._client = HttpClient(PublicOnlyResolver(allow=allow), min(10.0, timeout), idle_seconds=0,
                                  decompress=False)

    async def fetch(self, url: str) -> Fetched:
        """The body at `url` after at most MAX_REDIRECTS redirects; raises FetchRefused or FetchFailed."""
        for _ in range(MAX_REDIRECTS + 1):
            self._check_url(url)
            try:
                async with asyncio.timeout(self._timeout):
                    response = await self._client.open(_wire_url(url), "GET", HEADERS, b"", self._timeout)
                    try:
                        location = response.headers.get("location")
                        if response.status in REDIRECTS and location:
                            url = urljoin(url, location)
                            continue
                        return await self._body(url, response)
                    finally:
                        response.close()
            except (FetchRefused, FetchFailed):
                raise
            except TimeoutError:
                raise FetchFailed(f"could not download {_label(url)} (timed out)") from None
            except (OSError, ValueError) as exc:
                # ConnectionError (refused, reset, cut short, not HTTP), a failed lookup, a bad certificate.
                raise FetchFailed(f"could not download {_label(url)} ({type(exc).__name__})") from None
        raise FetchRefused(f"more than {MAX_REDIRECTS} redirects")

    async def _body(self, url: str, response: HttpResponse) -> Fetched:
        """Read a final (non-redirect) answer: only a 200 within the size limit is a download."""
        if response.status != 200:
            raise FetchFailed(f"downloading {_label(url)} answered HTTP {response.status}")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise FetchFailed(f"could not download {_label(url)} (too large)")
        body = await self._read(url, response)
        if len(body) > self._max_bytes:
            raise FetchFailed(f"{_label(url)} is larger than {self._max_bytes} bytes")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        return Fetched(body, content_type, url)

    async def _read(self, url: str, response: HttpResponse) -> bytes:
        """The body, decoded if it came compressed; one byte over the limit at most (enough to refuse it)."""
        limit = self._max_bytes + 1
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("gzip", "deflate", "x-gzip"):
            return await response.read_all(self._timeout, limit)
        # Sent compressed though we never asked: decode no further than the limit.
        decoder, out = zlib.decompressobj(15 + 32), bytearray()
        try:
            while len(out) < limit and (chunk := await response.next_chunk(self._timeout)) is not None:
                # Below the limit each call consumes its whole input, so nothing waits in unconsumed_tail.
                out += decoder.decompress(chunk, limit - len(out))
            if len(out) < limit:
                out += decoder.flush()
        except zlib.error:
            raise FetchFailed(f"could not download {_label(url)} (a corrupt {encoding} body)") from None
        return bytes(out)

    def _check_url(self, url: str) -> None:
        """Refuse, before any lookup, a scheme, credentials, port or IP literal we never fetch."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchRefused("only http and https URLs can be fetched")
        if parts.username or parts.password:
            raise FetchRefused("URLs with credentials are not fetched")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise FetchRefused("the URL's port is not a number") from None
        host = parts.hostname
        if port not in self._ports and not any(p == port for _h, p in self._allow):
            raise FetchRefused(f"port {port} is not allowed (server.fetch_allowed_ports)")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            return   # a name: the resolver checks where it points
        if (str(literal), port) not in self._allow and not public_address(literal):
            raise FetchRefused("the URL points at a non-public address")


def _parse_allow(text: str) -> set[tuple[str, int]]:
    """The test-only allow list: "host:port,[v6]:port" as {(host, port)}."""
    pairs = set()
    for item in text.split(","):
        host, _, port = item.strip().rpartition(":")
        if host and port.isdigit():
            pairs.add((host.strip("[]"), int(port)))
    return pairs


def _label(url: str) -> str:
    """The URL's scheme and host only: never the path or query (they may carry a signature or a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}"


def _wire_url(url: str) -> str:
    """The URL with spaces and non-ASCII in its path and query percent-encoded (escapes kept), no fragment."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=quote(parts.path, safe=_URL_SAFE), query=quote(parts.query, safe=_URL_SAFE),
                                     fragment=""))
