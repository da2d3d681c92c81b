"""python -m bench.relay PORT TARGET_PORT: copy bytes between clients and 127.0.0.1:TARGET_PORT, nothing else.

The floor under any proxy on this machine: no HTTP parsing, no translation, no chat to create or
delete, on uvloop like the server. Its ratio against the direct baseline is the best a proxy in the
path can score here. Benchmark use only: no back-pressure, no timeouts.
"""

from __future__ import annotations

import asyncio
import sys

from server.edge.event_loop import run


class _Half(asyncio.Protocol):
    """One side of a relayed connection: what it receives goes out on the other side."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.other: _Half | None = None
        self.early: list[bytes] = []   # received before the other side was connected

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        if self.other is not None and self.other.early:
            transport.write(b"".join(self.other.early))   # first, so nothing overtakes it
            self.other.early.clear()

    def data_received(self, data: bytes) -> None:
        other = self.other
        if other is not None and other.transport is not None:
            other.transport.write(data)
        else:
            self.early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.close()


async def _serve(port: int, target: int) -> None:
    loop = asyncio.get_running_loop()

    def accept() -> _Half:
        client, upstream = _Half(), _Half()
        client.other, upstream.other = upstream, client

        async def connect() -> None:
            try:
                await loop.create_connection(lambda: upstream, "127.0.0.1", target)
            except OSError:
                client.transport.close()
        loop.create_task(connect())
        return client

    server = await loop.create_server(accept, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    run(_serve(int(sys.argv[1]), int(sys.argv[2])), use_uvloop=True)
