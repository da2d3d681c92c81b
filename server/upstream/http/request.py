"""The request head on the wire: refuse what HTTP cannot carry, then encode it once."""

from __future__ import annotations

import re
from urllib.parse import SplitResult

_LINE_BREAK = re.compile("[\r\n\0]")   # in a header, these would let it smuggle another header or request


class UnsendableRequest(ValueError):
    """A request that cannot go on the wire (a line break or a non-Latin-1 character in a header)."""


def request_bytes(method: str, parts: SplitResult, headers: dict, body: bytes) -> bytes:
    """The whole request (head and body) as bytes; raises UnsendableRequest naming the bad header."""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    fields = [f"{name}: {value}" for name, value in headers.items()]
    if _LINE_BREAK.search("".join(fields)):   # one scan of all headers: this runs for every call to Kimi
        name = next(name for name, value in headers.items() if _LINE_BREAK.search(f"{name}{value}"))
        raise UnsendableRequest(f"the {name} header holds a line break")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}", *fields,
             f"Content-Length: {len(body)}"]
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    except UnicodeEncodeError:
        raise UnsendableRequest("a header holds a character HTTP cannot carry") from None
