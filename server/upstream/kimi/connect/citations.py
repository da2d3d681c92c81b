"""Kimi's inline citation markers, rewritten as `[n]` or removed, even when split across frames.

Two forms are documented (kimi-protocol.md §3.7, kimi-protocol-2026-12.md §5a): emoji around a tool
result index, `🛠web_search:1#5🛠` (optionally `🛠web_search:1#5:~:text=…🛠`, also with `🎨`), and
Private Use Area brackets, `\\ue3a0cite\\ue3a3web_search:1#0\\ue3a3web_search:1#2\\ue3a8`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

EMOJI = ("🛠", "🎨")
PUA_OPEN, PUA_SEP, PUA_CLOSE = "\ue3a0", "\ue3a3", "\ue3a8"
MAX_MARKER = 400   # longer than this is text that merely contains the character, not a marker
_REF = re.compile(r"[a-z_]+:\d+#\d+")
_EMOJI_INNER = re.compile(rf"(?P<ref>{_REF.pattern})(?::~:text=[^\n]*)?")
# Every prefix of an emoji marker's inside, so a marker split across frames is held, not leaked.
_EMOJI_PREFIX = re.compile(r"[a-z_]*(?::\d*(?:#\d*(?::(?:~(?::(?:t(?:e(?:x(?:t(?:=[^\n]*)?)?)?)?)?)?)?)?)?)?")


class CitationFilter:
    """Feed answer text; get it back with markers replaced by `[n]` (`number(ref)`) or dropped (None)."""

    def __init__(self, number: Callable[[str], int | None]) -> None:
        self._number = number
        self._held = ""   # a marker begun but not yet closed

    def feed(self, text: str) -> str:
        """The text that is certain so far; a marker still open is held for the next call."""
        out, text = [], self._held + text
        self._held = ""
        i = 0
        while i < len(text):
            start = _next_opener(text, i)
            if start < 0:
                out.append(text[i:])
                break
            out.append(text[i:start])
            end, replacement = self._marker(text, start)
            if end is None:          # open at the end of what we have: wait for more
                self._held = text[start:]
                break
            out.append(replacement)
            i = end
        return "".join(out)

    def flush(self) -> str:
        """The end of the answer: a marker never closed was ordinary text after all."""
        held, self._held = self._held, ""
        return held

    def _marker(self, text: str, start: int) -> tuple[int | None, str]:
        """(end, replacement) for the marker at `start`; end None while it may still be completing."""
        opener = text[start]
        close = PUA_CLOSE if opener == PUA_OPEN else opener
        stop = text.find(close, start + 1)
        inner = text[start + 1:] if stop < 0 else text[start + 1:stop]
        if opener == PUA_OPEN:
            if stop < 0:
                return (None, "") if len(inner) < MAX_MARKER else (start + 1, opener)
            refs = inner.split(PUA_SEP)[1:]
            if not refs or not all(_REF.fullmatch(r) for r in refs):
                return start + 1, opener
            return stop + 1, self._cite(refs)
        if stop < 0:
            viable = len(inner) < MAX_MARKER and _EMOJI_PREFIX.fullmatch(inner)
            return (None, "") if viable else (start + 1, opener)
        match = _EMOJI_INNER.fullmatch(inner)
        if match is None:
            return start + 1, opener   # an emoji in the text (🛠️ Tools), not a marker
        return stop + 1, self._cite([match["ref"]])

    def _cite(self, refs: list[str]) -> str:
        """`[n]` for each reference with a number; nothing for the others."""
        numbers = [n for n in (self._number(r) for r in refs) if n is not None]
        return "".join(f"[{n}]" for n in numbers)


def _next_opener(text: str, start: int) -> int:
    """Where the next possible marker starts, or -1."""
    found = [p for p in (text.find(c, start) for c in (*EMOJI, PUA_OPEN)) if p >= 0]
    return min(found) if found else -1
