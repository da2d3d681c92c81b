"""The SSRF-safe fetcher, in process, against a loopback server: redirects re-checked, limits, clear failures."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from server.upstream.safe_fetch import TEST_ALLOW_ENV, FetchFailed, FetchRefused, SafeFetcher

PDF = b"%PDF-1.4\n" + bytes(range(256))


class Files:
    """A loopback HTTP/1.1 server answering by path; counts the connections it gets."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            writer.close()
            return
        self.requests.append(head)
        path = head.split(b" ")[1].decode()
        if path == "/hang-up":
            writer.close()
            return
        if path == "/silent":
            await reader.read()   # never answers; returns once the client gives up
            writer.close()
            return
        writer.write(self._answer(path))
        await writer.drain()
        writer.close()

    def _answer(self, path: str) -> bytes:
        if path.startswith("/doc"):
            return (b"HTTP/1.1 200 OK\r\nContent-Type: Application/PDF; charset=binary\r\nContent-Length: %d\r\n\r\n"
                    % len(PDF) + PDF)
        if path.startswith("/hop/"):
            left = int(path.rsplit("/", 1)[1])
            target = "/doc.pdf" if left == 0 else f"/hop/{left - 1}"
            return b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % target.encode()
        if path == "/to-private":
            return b"HTTP/1.1 301 Moved\r\nLocation: http://10.0.0.1/x\r\nContent-Length: 0\r\n\r\n"
        if path == "/gzip-doc":
            body = gzip.compress(PDF)
            return (b"HTTP/1.1 200 OK\r\nContent-Type: application/pdf\r\nContent-Encoding: gzip\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body)
        if path in ("/gzip-bomb", "/gzip-corrupt"):
            body = gzip.compress(bytes(10 << 20)) if path == "/gzip-bomb" else b"\x1f\x8b not gzip at all"
            return (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        if path == "/declared-big":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + bytes(5000)
        if path == "/streamed-big":
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n%s\r\n" % bytes(1024) * 5 + b"0\r\n\r\n"
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


def _fetch(path: str, allow: bool = True, host: str = "127.0.0.1", timeout: float = 5.0):
    """Fetch `path` from a fresh Files server (allowed as public unless `allow` is False); (result or error, files)."""
    async def go():
        files = Files()
        await files.start()
        environ = {TEST_ALLOW_ENV: f"127.0.0.1:{files.port}"} if allow else {}
        fetcher = SafeFetcher(1000, timeout, frozenset({80, 443, files.port}), environ=environ)
        try:
            return await fetcher.fetch(f"http://{host}:{files.port}{path}"), files
        except (FetchRefused, FetchFailed) as exc:
            return exc, files
        finally:
            files.server.close()
    return asyncio.run(go())


def test_a_document_comes_back_with_its_type_and_final_url():
    fetched, files = _fetch("/hop/2")
    assert fetched.data == PDF and fetched.content_type == "application/pdf"
    assert fetched.url == f"http://127.0.0.1:{files.port}/doc.pdf"
    assert b"User-Agent: kimi-bridge/1.0 (+file fetch)" in files.requests[0]


def test_a_body_sent_gzipped_unasked_is_decoded():
    fetched, files = _fetch("/gzip-doc")
    assert fetched.data == PDF and b"accept-encoding" not in files.requests[0].lower()


def test_spaces_and_non_ascii_in_the_path_are_percent_encoded_on_the_wire():
    fetched, files = _fetch("/doc dé.pdf?q=a b")
    assert fetched.data == PDF
    assert files.requests[0].startswith(b"GET /doc%20d%C3%A9.pdf?q=a%20b HTTP/1.1\r\n")


def test_more_than_five_redirects_are_refused():
    assert str(_fetch("/hop/4")[0].url).endswith("/doc.pdf")
    refused, _ = _fetch("/hop/5")
    assert isinstance(refused, FetchRefused) and str(refused) == "more than 5 redirects"


def test_a_redirect_into_our_network_is_refused_before_connecting():
    refused, _ = _fetch("/to-private")
    assert isinstance(refused, FetchRefused) and str(refused) == "the URL points at a non-public address"


def test_a_name_resolving_to_loopback_is_refused_and_never_connected():
    refused, files = _fetch("/doc.pdf", allow=False, host="localhost")
    assert isinstance(refused, FetchRefused) and str(refused) == "localhost resolves to a non-public address"
    assert files.connections == 0


@pytest.mark.parametrize("path, message", [
    ("/declared-big", "could not download http://127.0.0.1 (too large)"),
    ("/streamed-big", "http://127.0.0.1 is larger than 1000 bytes"),
    ("/gzip-bomb", "http://127.0.0.1 is larger than 1000 bytes"),
    ("/gzip-corrupt", "could not download http://127.0.0.1 (a corrupt gzip body)"),
    ("/missing", "downloading http://127.0.0.1 answered HTTP 404"),
    ("/hang-up", "could not download http://127.0.0.1 (ConnectionError)"),
])
def test_each_failure_is_a_clear_fetch_failed(path, message):
    failed, _ = _fetch(path)
    assert isinstance(failed, FetchFailed) and str(failed) == message


def test_a_server_that_never_answers_times_out():
    failed, _ = _fetch("/silent", timeout=0.3)
    assert isinstance(failed, FetchFailed) and str(failed) == "could not download http://127.0.0.1 (timed out)"


def test_a_gzip_bomb_is_decoded_no_further_than_one_byte_over_the_limit():
    class Bomb:
        """A response whose whole gzip body (10 MiB of zeros) arrives as one chunk."""

        headers = {"content-encoding": "gzip"}

        def __init__(self) -> None:
            self.chunks = [gzip.compress(bytes(10 << 20))]

        async def next_chunk(self, timeout: float) -> bytes | None:
            return self.chunks.pop() if self.chunks else None

    fetcher = SafeFetcher(1000, 5.0, frozenset({80}), environ={})
    assert len(asyncio.run(fetcher._read("http://example.com/x", Bomb()))) == 1001
