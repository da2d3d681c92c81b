"""The upstream HTTP/1.1 client: every body framing in any split, broken answers, keep-alive reuse and its retry."""

from __future__ import annotations

import asyncio
import gzip
from urllib.parse import urlsplit

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.upstream.http import HttpClient, UnsendableRequest
from server.upstream.http.connection import Connection as _Connection
from server.upstream.http.request import request_bytes as _request_bytes
from server.upstream.resolver import CachingResolver
from tests.helpers import Stack, wait_until


class FakeTransport:
    """Records what the connection does to its socket."""

    def __init__(self) -> None:
        self.written, self.aborted, self.paused = b"", False, False

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.aborted


def _chunked(body: bytes, size: int) -> bytes:
    out = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size))
    return out + b"0\r\nX-Trailer: t\r\n\r\n"


BODY = "收到 🌙 data: {\"a\": 1}\r\n\r\n".encode() * 7
FRAMINGS = {
    "length": (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Twice: a\r\nX-Twice: b\r\n\r\n" % len(BODY) + BODY, True),
    "chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(BODY, 13), True),
    "gzip": (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
             + _chunked(gzip.compress(BODY), 17), True),
    "continue": (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY, True),
    "close": (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(BODY) + BODY, False),
    "until_close": (b"HTTP/1.1 200 OK\r\n\r\n" + BODY, False),
    "http10": (b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY, False),
}


async def _drive(raw: bytes, cuts: list[int], client: HttpClient | None = None):
    """Feed `raw` to a connection in the pieces `cuts` makes; return (response, body or error, connection)."""
    client = client or HttpClient(CachingResolver(), 1.0, 30.0)
    connection = _Connection(client, ("http", "kimi.test", 80))
    connection.connection_made(FakeTransport())
    response = connection.send(b"GET / HTTP/1.1\r\n\r\n", "GET")
    edges = [0, *sorted(set(c % (len(raw) + 1) for c in cuts)), len(raw)]
    for start, end in zip(edges, edges[1:]):
        if start < end:
            connection.data_received(raw[start:end])
    if b"HTTP/1.1 200 OK\r\n\r\n" in raw:   # until-close: the end of the body is the end of the connection
        connection.connection_lost(None)
    try:
        outcome = await response.read_all(1.0, 1 << 20)
    except ConnectionError as exc:
        outcome = exc
    return response, outcome, connection, client


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(FRAMINGS)), cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_every_framing_parses_whole_in_any_split(name, cuts):
    raw, reusable = FRAMINGS[name]

    async def go():
        response, body, connection, client = await _drive(raw, cuts)
        assert body == BODY, (name, body)
        assert response.status == 200
        assert (connection in client._idle.get(connection.key, [])) == reusable
        assert connection.transport.aborted == (not reusable and name != "until_close")
        if name == "length":
            assert response.headers["x-twice"] == "a, b"
        client.close()
    asyncio.run(go())


@pytest.mark.parametrize("raw, why", [
    (b"SSH-2.0-OpenSSH\r\n\r\n", "no HTTP/1.x status line"),
    (b"HTTP/1.1 abc OK\r\n\r\n", "invalid literal"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "a header line without a colon"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid literal"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY", "does not end with CRLF"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "negative Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope", "compressed body is corrupt"),
    (b"HTTP/1.1 200 OK\r\nX: " + b"a" * (70 << 10), "head is too long"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2000, "chunk size line is too long"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: " + b"a" * (70 << 10), "trailer line is too long"),
])
def test_a_broken_answer_is_a_connection_error_and_drops_the_connection(raw, why):
    async def go():
        _, outcome, connection, client = await _drive(raw, [])
        assert isinstance(outcome, ConnectionError) and why in str(outcome), outcome
        assert connection.transport.aborted and not client._idle.get(connection.key)
    asyncio.run(go())


def test_a_body_cut_short_is_an_error_not_a_short_answer():
    async def go():
        raw = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part"
        client = HttpClient(CachingResolver(), 1.0, 30.0)
        connection = _Connection(client, ("http", "kimi.test", 80))
        connection.connection_made(FakeTransport())
        response = connection.send(b"", "GET")
        connection.data_received(raw)
        assert await response.next_chunk(1.0) == b"only part"
        connection.connection_lost(None)
        with pytest.raises(ConnectionError):
            await response.next_chunk(1.0)
    asyncio.run(go())


def test_a_slow_reader_pauses_the_socket_until_it_catches_up():
    async def go():
        client = HttpClient(CachingResolver(), 1.0, 30.0)
        connection = _Connection(client, ("http", "kimi.test", 80))
        connection.connection_made(FakeTransport())
        response = connection.send(b"", "GET")
        connection.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"x" * 65536
        for _ in range(20):
            connection.data_received(b"%x\r\n%s\r\n" % (len(piece), piece))
        assert connection.transport.paused
        assert len(await response.next_chunk(1.0)) == 20 * len(piece)
        assert not connection.transport.paused
    asyncio.run(go())


def test_header_values_cannot_smuggle_lines():
    parts = urlsplit("http://user:pw@kimi.test:8080/api/chat?x=1")
    head = _request_bytes("POST", parts, {"Authorization": "Bearer t"}, b"{}")
    assert head.startswith(b"POST /api/chat?x=1 HTTP/1.1\r\nHost: kimi.test:8080\r\n")
    assert head.endswith(b"Content-Length: 2\r\n\r\n{}")
    for bad in ("t\r\nX-Injected: 1", "t\nX", "t\rX", "t\0", "tök€n"):
        with pytest.raises(UnsendableRequest) as caught:
            _request_bytes("POST", parts, {"Accept": "*/*", "Authorization": bad}, b"")
        assert "Authorization" in str(caught.value) or "character" in str(caught.value)
        assert bad not in str(caught.value)
    with pytest.raises(UnsendableRequest, match="X-Bad"):
        _request_bytes("POST", parts, {"Accept": "*/*", "X-Bad\r\nX-Injected": "1"}, b"")


class ScriptedServer:
    """A loopback HTTP server whose n-th request on each connection gets a scripted fate."""

    def __init__(self, fate) -> None:
        self.fate = fate          # (connection number, request number on it) -> "answer" | "close" | "hang"
        self.connections = 0
        self.eof_seen = asyncio.Event()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            for request_number in range(1, 100):
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length")), 0)
                await reader.readexactly(length)
                fate = self.fate(number, request_number)
                if fate == "close":
                    writer.close()
                    return
                if fate == "hang":
                    await reader.read()   # until the client gives up
                    self.eof_seen.set()
                    return
                body = orjson.dumps({"connection": number, "request": request_number})
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    def close(self) -> None:
        self.server.close()


def _run_against(fate, calls, idle_seconds: float = 30.0):
    async def go():
        server = ScriptedServer(fate)
        url = await server.start()
        client = HttpClient(CachingResolver(), 2.0, idle_seconds)
        results = []
        try:
            for _ in range(calls):
                try:
                    reply = await client.fetch(url + "/api/chat", "POST", {}, b"{}", 2.0)
                    results.append(orjson.loads(reply.body))
                except (ConnectionError, TimeoutError) as exc:
                    results.append(type(exc).__name__)
        finally:
            client.close()
            server.close()
        return results, server.connections
    return asyncio.run(go())


def test_calls_share_one_kept_alive_connection():
    results, connections = _run_against(lambda c, r: "answer", 5)
    assert [r["request"] for r in results] == [1, 2, 3, 4, 5]
    assert connections == 1


def test_no_reuse_when_the_pool_is_off():
    results, connections = _run_against(lambda c, r: "answer", 3, idle_seconds=0)
    assert [r["connection"] for r in results] == [1, 2, 3]
    assert connections == 3


def test_a_kept_connection_the_server_dropped_is_retried_once_on_a_fresh_one():
    # The server answers once per connection, then closes the next request unanswered (an idle close racing us).
    results, connections = _run_against(lambda c, r: "answer" if r == 1 else "close", 3)
    assert [(r["connection"], r["request"]) for r in results] == [(1, 1), (2, 1), (3, 1)]
    assert connections == 3


def test_a_fresh_connection_that_closes_unanswered_is_an_error_not_a_retry_loop():
    results, connections = _run_against(lambda c, r: "close", 1)
    assert results == ["ConnectionError"] and connections == 1


def test_an_unanswered_request_times_out_and_the_connection_is_dropped():
    async def go():
        server = ScriptedServer(lambda c, r: "hang")
        url = await server.start()
        client = HttpClient(CachingResolver(), 2.0, 30.0)
        with pytest.raises(TimeoutError):
            await client.open(url + "/", "GET", {}, b"", 0.2)
        await asyncio.wait_for(server.eof_seen.wait(), 30)   # the abandoned connection was closed
        client.close()
        server.close()
    asyncio.run(go())


def test_idle_connections_close_after_the_idle_time():
    async def go():
        server = ScriptedServer(lambda c, r: "answer")
        url = await server.start()
        client = HttpClient(CachingResolver(), 2.0, 0.05)
        await client.fetch(url + "/", "GET", {}, b"", 2.0)
        while client._idle.get(("http", "127.0.0.1", int(url.rsplit(":", 1)[1]))):
            await asyncio.sleep(0.01)   # polling a condition: the idle timer closes the connection
        server.close()
    asyncio.run(asyncio.wait_for(go(), 30))


@pytest.mark.parametrize("pool_idle", [15.0, 0.0])
def test_the_server_reuses_upstream_connections_unless_told_not_to(tmp_path, pool_idle):
    stack = Stack(tmp_path, upstream={"pool_idle_seconds": pool_idle})
    try:
        for i in range(8):
            r = stack.post({"model": "kimi", "messages": [{"role": "user", "content": f"reuse {i}"}]})
            assert r.status_code == 200, r.text
        wait_until(lambda: stack.emulator.stats()["chats_deleted"] == 8, 30, "the chats to be deleted")
        stats = stack.emulator.stats()
        calls = sum(stats["requests"].get(k, 0) for k in ("chat_create", "completion", "chat_delete"))
        assert calls >= 24, stats["requests"]
        if pool_idle:
            assert stats["connections"] <= 4, stats
        else:
            assert stats["connections"] >= calls, stats
    finally:
        stack.close()


def test_closing_after_the_last_event_keeps_the_connection_when_the_body_ends_soon():
    async def go():
        client = HttpClient(CachingResolver(), 1.0, 30.0)
        ends, hangs = (_Connection(client, ("http", "kimi.test", 80)) for _ in range(2))
        for connection in (ends, hangs):
            connection.connection_made(FakeTransport())
            response = connection.send(b"", "GET")
            connection.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nlast!\r\n")
            assert await response.next_chunk(1.0) == b"last!"
            response.close_when_done(grace=0.05)
        ends.data_received(b"3\r\nxyz\r\n0\r\n\r\n")   # the rest, dropped unread
        assert ends in client._idle[ends.key] and not ends.transport.aborted
        while not hangs.transport.aborted:
            await asyncio.sleep(0.01)   # polling a condition: the grace timer drops a body that never ends
        assert hangs not in client._idle[hangs.key]
    asyncio.run(asyncio.wait_for(go(), 30))


def test_the_resolver_answers_literals_at_once_and_caches_names_for_a_minute(monkeypatch):
    import server.upstream.resolver as resolver
    lookups, now = [], [1000.0]

    async def system(host, port, family):
        lookups.append(host)
        return [(2, (f"192.0.2.{len(lookups)}", port))]
    monkeypatch.setattr(resolver, "system_resolve", system)
    monkeypatch.setattr(resolver.time, "monotonic", lambda: now[0])

    async def go():
        cache = CachingResolver()
        assert await cache.resolve("203.0.113.9", 443) == [(2, ("203.0.113.9", 443))]
        assert await cache.resolve("2001:db8::1", 443) == [(10, ("2001:db8::1", 443, 0, 0))]
        assert lookups == []
        first = await cache.resolve("kimi.test", 443)
        now[0] += resolver.TTL_SECONDS - 1
        assert await cache.resolve("kimi.test", 443) == first and lookups == ["kimi.test"]
        now[0] += 2
        assert await cache.resolve("kimi.test", 443) != first and lookups == ["kimi.test", "kimi.test"]
    asyncio.run(go())


def test_the_system_resolver_finds_localhost():
    from server.upstream.resolver import system_resolve
    addresses = asyncio.run(system_resolve("localhost", 8080))
    assert addresses and all(address[1] == 8080 for _family, address in addresses)
