"""The streaming tool-call parser: Kimi's answer text, in any chunks, becomes text and tool-call events.

Kimi's web chat has no tool API, so the prompt asks it to write each call as
`<tool_call>{"name": "...", "arguments": {...}}</tool_call>`. This parser reads the answer as it streams
and never lets a valid block's markup reach the client, however the text is split. Its output depends
only on the whole answer's text, never on the split: text outside blocks is released as soon as it
cannot be the start of an opening tag, except for a trailing run of whitespace, which is held until
what follows it is known (dropped before a call and after the last one, kept before real text).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Callable, Collection

import orjson

from server.core.events import (
    Event,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)

log = logging.getLogger("server.emulation.tool_parser")

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
# A fence the model may wrap the JSON in, inside the tags: ```json ... ``` or a bare ``` ... ```.
_FENCE = re.compile(r"\A```[A-Za-z0-9_-]*\s*(.*?)\s*(?:```)?\Z", re.DOTALL)
_DECODER = json.JSONDecoder()   # raw_decode finds where a JSON value ends; orjson has no such call


def new_call_id() -> str:
    """A fresh tool-call id: call_ and 24 random hex digits."""
    return "call_" + secrets.token_hex(12)


def parse_block(body: str, tool_names: Collection[str]) -> tuple[str, dict] | str:
    """The (name, arguments) a block's body spells, or why it is not a valid call."""
    text = body.strip()
    fenced = _FENCE.match(text) if text.startswith("```") else None
    if fenced:
        text = fenced.group(1)
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        return f"no valid JSON ({e})"
    if not isinstance(obj, dict):
        return f"the block holds a JSON {type(obj).__name__}, not an object"
    if "name" not in obj and isinstance(obj.get("function"), dict):
        obj = obj["function"]   # the OpenAI wire shape {"type": "function", "function": {...}}, which models imitate
    name = obj.get("name")
    if not isinstance(name, str) or name not in tool_names:
        return f"tool name {name!r} was not offered"
    args = obj["arguments"] if "arguments" in obj else obj.get("parameters")
    if isinstance(args, str):
        # Models copy the OpenAI wire format, where arguments are a JSON string.
        try:
            args = orjson.loads(args) if args.strip() else None
        except orjson.JSONDecodeError as e:
            return f"arguments are a string that is not JSON ({e})"
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return f"arguments are a JSON {type(args).__name__}, not an object"
    return name, args


class ToolCallParser:
    """Turns one answer's streamed text into TextDelta and ToolCallStart/Delta/End events."""

    def __init__(self, tool_names: Collection[str], parallel: bool = True,
                 new_id: Callable[[], str] = new_call_id) -> None:
        self._names = frozenset(tool_names)
        self._parallel = parallel
        self._new_id = new_id
        self._calls = 0
        self._inside = False        # between an opening tag and its closing tag
        self._tag = ""              # outside: a tail that may still grow into the opening tag
        self._ws: list[str] = []    # outside: trailing whitespace, held until what follows is known
        self._after_call = False    # nothing but whitespace since the last valid block
        self._body: list[str] = []  # inside: the block's text so far
        self._carry = ""            # inside: the body's last characters, where a split closing tag may start
        self._ended = False

    @property
    def calls(self) -> int:
        """How many tool calls have been emitted so far."""
        return self._calls

    def feed(self, text: str) -> list[Event]:
        """The events a further piece of the answer's text releases."""
        if self._ended:
            raise RuntimeError("feed() after end()")
        if not self._inside and not self._tag and "<" not in text:
            released = self._text(text)   # the hot path: plain text, no tag can start here
            return [TextDelta(released)] if released else []
        out: list[Event] = []
        if self._tag:
            text, self._tag = self._tag + text, ""
        while text:
            text = self._in_block(text, out) if self._inside else self._outside(text, out)
        return out

    def end(self) -> list[Event]:
        """The events of what is still held once the answer is complete."""
        if self._ended:
            return []
        self._ended = True
        out: list[Event] = []
        if self._inside:
            self._inside = False
            self._blocks("".join(self._body), closed=False, out=out)   # the closing tag never came
        elif self._tag:
            self._emit(self._text(self._tag), out)   # a tag that never completed is plain text
        if self._ws and not self._after_call:
            self._emit("".join(self._ws), out)
        self._ws, self._tag, self._body = [], "", []
        return out

    def _outside(self, text: str, out: list[Event]) -> str:
        """Release text up to the next opening tag; return what is left after that tag ("" if none)."""
        start = pos = 0
        while (i := text.find("<", pos)) >= 0:
            if text.startswith(OPEN, i):
                self._emit(self._text(text[start:i]), out)
                self._inside, self._body, self._carry = True, [], ""
                return text[i + len(OPEN):]
            if len(text) - i < len(OPEN) and OPEN.startswith(text[i:]):
                self._emit(self._text(text[start:i]), out)
                self._tag = text[i:]   # may still become the opening tag: hold it
                return ""
            pos = i + 1   # a '<' the next character already rules out
        self._emit(self._text(text[start:]), out)
        return ""

    def _in_block(self, text: str, out: list[Event]) -> str:
        """Hold block text until its closing tag; return what follows the tag ("" if not yet seen)."""
        probe = self._carry + text   # only the new text and a short tail: never rescan the whole body
        j = probe.find(CLOSE)
        if j < 0:
            self._body.append(text)
            self._carry = probe[-(len(CLOSE) - 1):]
            return ""
        whole = "".join(self._body) + text   # ends with probe, since carry is the body's tail
        k = len(whole) - len(probe) + j
        self._inside, self._body, self._carry = False, [], ""
        self._blocks(whole[:k], closed=True, out=out)
        return whole[k + len(CLOSE):]

    def _blocks(self, body: str, closed: bool, out: list[Event]) -> None:
        """Handle a finished block; an opening tag inside it means the blocks before it were never closed."""
        pieces = body.split(OPEN)
        for n, piece in enumerate(pieces):
            if closed and n == len(pieces) - 1:
                self._block(piece, True, out)
            elif (split := self._split_unclosed(piece)) is not None:
                self._block(split[0], False, out)
                self._emit(self._text(split[1]), out)   # the model went on writing after the call
            else:
                self._block(piece, False, out)

    def _split_unclosed(self, body: str) -> tuple[str, str] | None:
        """An unclosed block that is not a call as a whole: the call its JSON starts with and the text after it."""
        if not isinstance(parse_block(body, self._names), str):
            return None   # the whole body is the call
        stripped = body.lstrip()
        try:
            end = _DECODER.raw_decode(stripped)[1]
        except ValueError:
            return None
        if isinstance(parse_block(stripped[:end], self._names), str):
            return None
        return stripped[:end], stripped[end:]

    def _block(self, body: str, closed: bool, out: list[Event]) -> None:
        """Emit one block as a call, drop it (a second call when calls are not parallel), or show it as text."""
        parsed = parse_block(body, self._names)
        if isinstance(parsed, str):
            log.debug("tool-call block shown as text: %s", parsed)
            self._emit("".join(self._ws) + OPEN + body + (CLOSE if closed else ""), out)
            self._ws, self._after_call = [], False
            return
        self._ws, self._after_call = [], True   # whitespace before a call is layout, not content
        name, args = parsed
        if not self._parallel and self._calls:
            log.debug("tool call %r dropped: parallel tool calls are off and a call was already made", name)
            return
        index, call_id = self._calls, self._new_id()
        self._calls += 1
        out += (ToolCallStart(index, call_id, name), ToolCallDelta(index, orjson.dumps(args).decode()),
                ToolCallEnd(index, call_id, name, args))

    def _text(self, text: str) -> str:
        """Text outside blocks: what of it can be released now; its trailing whitespace is held back."""
        content = text.rstrip()
        if not content:
            if text:
                self._ws.append(text)
            return ""
        held = self._ws
        self._ws = [text[len(content):]] if len(content) < len(text) else []
        self._after_call = False
        return "".join(held) + content if held else content

    @staticmethod
    def _emit(text: str, out: list[Event]) -> None:
        """Append text (if any) to the batch, merged with a TextDelta that ends it."""
        if not text:
            return
        if out and isinstance(out[-1], TextDelta):
            out[-1] = TextDelta(out[-1].text + text)
        else:
            out.append(TextDelta(text))
