"""A small asyncio load generator: hundreds of concurrent streamed HTTP/1.1 requests, timed per request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson


# A byte string that first appears in the frame carrying the answer's first text.
FIRST_TOKEN = {"openai": b'"delta":{"content":"', "kimi": b'"event":"cmpl"', "connect": b'"block.text.content"'}


@dataclass
class Result:
    """One request: status, whether the answer came whole, its text, and its timings (seconds)."""

    status: int = 0
    complete: bool = False     # a whole answer ([DONE], all_done, or a 200 JSON completion)
    error: str = ""            # the OpenAI error code, or what went wrong on the wire
    text: str = ""
    first_token: float | None = None
    total: float = 0.0


async def request(host: str, port: int, path: str, body: bytes, headers: dict, *, dialect: str,
                  timeout: float) -> Result:
    """POST `body` and read the whole answer. dialect: "openai" (our API), "kimi" (the emulator's REST SSE) or
    "connect" (the emulator's Connect Chat stream; `headers` then carry its content type)."""
    result = Result()
    start = time.perf_counter()
    marker = FIRST_TOKEN[dialect]
    try:
        await asyncio.wait_for(_exchange(host, port, path, body, headers, marker, dialect, result, start), timeout)
    except asyncio.TimeoutError:
        result.error = result.error or "client timeout"
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        result.error = result.error or f"{type(exc).__name__}"
    result.total = time.perf_counter() - start
    return result


async def _exchange(host, port, path, body, headers, marker, dialect, result: Result, start: float) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        headers = {"Content-Type": "application/json", **headers}
        head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}", "Connection: close",
                *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        status_line = await reader.readuntil(b"\r\n")
        result.status = int(status_line.split()[1])
        raw_headers = (await reader.readuntil(b"\r\n\r\n")).lower()
        chunked = b"transfer-encoding: chunked" in raw_headers
        data = bytearray()
        async for piece in _body(reader, chunked):
            if result.first_token is None and marker in piece:
                result.first_token = time.perf_counter() - start
            data += piece
        _parse(bytes(data), dialect, result)
    finally:
        writer.close()


async def _body(reader: asyncio.StreamReader, chunked: bool):
    if not chunked:
        while chunk := await reader.read(65536):
            yield chunk
        return
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            return
        yield await reader.readexactly(size)
        await reader.readexactly(2)


def _parse(data: bytes, dialect: str, result: Result) -> None:
    if dialect == "connect" and result.status == 200:
        _parse_connect(data, result)
        return
    if not data.startswith(b"data:") and not data.startswith(b":"):
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            result.error = result.error or "unreadable body"
            return
        if "error" in body:
            result.error = str(body["error"].get("code") or body["error"].get("type"))
        elif "choices" in body:
            result.text = body["choices"][0]["message"]["content"] or ""
            result.complete = True
        return
    texts = []
    for frame in data.split(b"\n\n"):
        if not frame.startswith(b"data: "):
            continue
        if frame == b"data: [DONE]":
            result.complete = True
            continue
        event = orjson.loads(frame[6:])
        if "error" in event and dialect == "openai":
            result.error = str(event["error"].get("code"))
        elif dialect == "openai":
            for choice in event.get("choices", []):
                texts.append(choice["delta"].get("content") or "")
        elif event.get("event") == "cmpl":
            texts.append(event.get("text", ""))
        elif event.get("event") == "all_done":
            result.complete = True
    result.text = "".join(texts)


async def run(make: Callable[[int], object], concurrency: int, count: int | None = None,
              duration: float | None = None) -> list[Result]:
    """Run `make(i)` coroutines with `concurrency` workers, for `count` requests or `duration` seconds."""
    results: list[Result] = []
    counter = iter(range(10**9))
    deadline = time.perf_counter() + duration if duration else None

    async def worker() -> None:
        while True:
            i = next(counter)
            if count is not None and i >= count:
                return
            if deadline is not None and time.perf_counter() >= deadline:
                return
            results.append(await make(i))
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def _parse_connect(data: bytes, result: Result) -> None:
    """Connect envelopes: text appends, the `done` event, and the end-of-stream frame (an error, or none)."""
    texts, at = [], 0
    while at + 5 <= len(data):
        flags, length = data[at], int.from_bytes(data[at + 1:at + 5], "big")
        message = orjson.loads(data[at + 5:at + 5 + length])
        at += 5 + length
        if flags & 0x02:
            if message.get("error"):
                result.error, result.complete = str(message["error"].get("code")), False
        elif message.get("mask") == "block.text.content":
            texts.append(message["block"]["text"]["content"])
        elif "done" in message:
            result.complete = True
    result.text = "".join(texts)
