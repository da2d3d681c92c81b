"""Connect streaming envelopes: [flags:1][length:4 big-endian][payload], split or coalesced across reads."""

from __future__ import annotations

import orjson

END_STREAM = 0x02
COMPRESSED = 0x01
MAX_FRAME = 16 << 20


class FrameError(ValueError):
    """Bytes that are not a valid Connect envelope."""


def encode(message: dict, flags: int = 0) -> bytes:
    """One envelope around a JSON message."""
    data = orjson.dumps(message)
    return bytes([flags]) + len(data).to_bytes(4, "big") + data


class FrameParser:
    """Feed bytes as they arrive; get (flags, message) pairs for every complete envelope."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, dict]]:
        self._buffer += data
        out = []
        while len(self._buffer) >= 5:
            flags, length = self._buffer[0], int.from_bytes(self._buffer[1:5], "big")
            if flags & COMPRESSED:
                raise FrameError("a compressed envelope (not negotiated)")
            if length > MAX_FRAME:
                raise FrameError(f"an envelope of {length} bytes")
            if len(self._buffer) < 5 + length:
                break
            payload = bytes(self._buffer[5:5 + length])
            del self._buffer[:5 + length]
            try:
                message = orjson.loads(payload) if payload else {}
            except orjson.JSONDecodeError:
                raise FrameError("an envelope whose payload is not JSON") from None
            if not isinstance(message, dict):
                raise FrameError("an envelope whose payload is not a JSON object")
            out.append((flags, message))
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete envelope."""
        return len(self._buffer)
