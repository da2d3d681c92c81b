"""The streaming tool-call parser: Kimi's answer text, in any chunks, becomes text and tool-call events.

Kimi's web chat has no tool API, so the prompt asks it to write each call as
`<tool_call>{"name": "...", "arguments": {...}}</tool_call>`. This parser reads the answer as it streams
and never lets a valid block's markup reach the client, however the text is split. Its output depends
only on the whole answer's text, never on the split: text outside blocks is released as soon as it
cannot be the start of markup, except for a trailing run of whitespace, which is held until what
follows it is known (dropped before a call and after the last one, kept before real text).
Three habits of the model are markup, not content: a stray closing tag right after a call (dropped), a
code fence that holds nothing but calls (it vanishes with them; a fence opener is held until a call or
real text follows it), and a closing tag inside a JSON string of the arguments (the block reads on to
the next tag after the object, found with raw_decode, tried only when the quick parse fails).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection

import orjson

from server.core.events import Event, TextDelta, ToolCallDelta, ToolCallEnd, ToolCallStart
from server.emulation.tool_markup import (CLOSE, IN_STRING, NOT_JSON, OPEN, new_call_id, object_end, parse_block,
                                          value_end)

log = logging.getLogger("server.emulation.tool_parser")

_SPECIAL = re.compile(r"[<`]")   # outside blocks only these can start markup
_INFO = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+.-")   # a fence's language
_MAX_INFO = 32   # a longer word after ``` is not a language name: no reason to hold it back


class ToolCallParser:
    """Turns one answer's streamed text into TextDelta and ToolCallStart/Delta/End events."""

    def __init__(self, tool_names: Collection[str], parallel: bool = True,
                 new_id: Callable[[], str] = new_call_id) -> None:
        self._names = frozenset(tool_names)
        self._parallel = parallel
        self._new_id = new_id
        self._calls = 0
        self._inside = False        # between an opening tag and its closing tag
        self._tag = ""              # outside: a tail that may still grow into markup (a tag, a fence)
        self._ws: list[str] = []    # outside: trailing whitespace, held until what follows is known
        self._after_call = False    # nothing but whitespace (and markup) since the last valid block
        self._may_close = False     # a valid block and only whitespace since: a stray closing tag is dropped
        self._fence = ""            # outside: a held fence opener (with the whitespace before it)
        self._fence_open = False    # the held fence has held a valid call: it vanishes if it closes now
        self._body: list[str] = []  # inside: the block's text so far
        self._carry = ""            # inside: the body's last characters, where a split closing tag may start
        self._piece = 0             # inside: where the body's last block starts (after its last opening tag)
        self._first_close = -1      # inside: a closing tag read as argument text, where it is in the body
        self._ended = False

    @property
    def calls(self) -> int:
        """How many tool calls have been emitted so far."""
        return self._calls

    def feed(self, text: str) -> list[Event]:
        """The events a further piece of the answer's text releases."""
        if self._ended:
            raise RuntimeError("feed() after end()")
        if not self._inside and not self._tag and "<" not in text and (
                "`" not in text or "``" not in text and text[-1] != "`"):
            released = self._text(text)   # the hot path: plain text, no markup can start here (lone ` is text)
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
        out: list[Event] = []
        while self._inside and self._first_close >= 0:
            # A closing tag was read as argument text, but the object never ended: the block ended there.
            whole = "".join(self._body)
            if object_end(whole[self._piece:]) >= 0:
                break
            first = self._first_close
            self._inside, self._body, self._first_close, self._piece = False, [], -1, 0
            self._blocks(whole[:first], closed=True, out=out)
            self._run(whole[first + len(CLOSE):], out)
        self._ended = True
        if self._inside:
            self._inside = False
            piece = self._piece if self._first_close >= 0 else None
            self._first_close, self._piece = -1, 0
            self._blocks("".join(self._body), closed=False, out=out, piece=piece)   # the closing tag never came
        elif self._tag:
            tag = self._tag
            if self._fence_open and tag.startswith("```"):
                self._fence, self._fence_open, self._ws = "", False, []   # the fence of calls closes here
                tag = tag[3:]
            self._emit(self._text(tag), out)   # markup that never completed is plain text
        if self._fence and not self._fence_open:
            self._emit(self._fence + "".join(self._ws), out)   # a fence opener no call followed: text
        elif self._ws and not self._after_call:
            self._emit("".join(self._ws), out)
        self._ws, self._tag, self._body, self._fence = [], "", [], ""
        return out

    def _run(self, text: str, out: list[Event]) -> None:
        """Feed text (after any held tail) through the outside and inside states."""
        if self._tag:
            text, self._tag = self._tag + text, ""
        while text:
            text = self._in_block(text, out) if self._inside else self._outside(text, out)

    def _outside(self, text: str, out: list[Event]) -> str:
        """Release text up to the next opening tag; return what is left after that tag ("" if none)."""
        start = pos = 0
        # Only a run of backticks, or one at the end that may grow, can be a fence; find() is the faster scan.
        ticks = "``" in text or text[-1] == "`"
        while True:
            if ticks:
                i = m.start() if (m := _SPECIAL.search(text, pos)) else -1
            else:
                i = text.find("<", pos)
            if i < 0:
                break
            if i > start and (self._after_call or self._fence):
                self._emit(self._text(text[start:i]), out)   # settle whether we are still right after a call
                start = i
            if not ticks or text[i] == "<":
                if text.startswith(OPEN, i):
                    self._emit(self._text(text[start:i]), out)
                    self._inside, self._body, self._carry, self._piece = True, [], "", 0
                    return text[i + len(OPEN):]
                stray = self._may_close and (not self._fence or self._fence_open)
                if stray and text.startswith(CLOSE, i):
                    self._ws, self._may_close = [], False   # the whitespace up to it is the call's markup too
                    start = pos = i + len(CLOSE)   # the model closed its call twice: drop the second tag
                    continue
                if len(text) - i < len(CLOSE) and (OPEN.startswith(text[i:])
                                                   or stray and CLOSE.startswith(text[i:])):
                    self._emit(self._text(text[start:i]), out)
                    self._tag = text[i:]   # may still become a tag: hold it
                    return ""
                pos = i + 1   # a '<' the next character already rules out
                continue
            if text[i + 1:i + 2] not in ("`", ""):
                pos = i + 1   # a lone backtick (inline code): the common case, decided at once
                continue
            j = i
            while j < len(text) and text[j] == "`":
                j += 1
            k = j
            if j - i == 3 and j < len(text) and not self._fence_open:
                while k < len(text) and text[k] in _INFO and k - j <= _MAX_INFO:
                    k += 1
            if j == len(text) and j - i <= 3 or k == len(text) and k - j <= _MAX_INFO:
                self._emit(self._text(text[start:i]), out)
                self._tag = text[i:]   # may still become a fence (or grow out of being one): hold it
                return ""
            if j - i != 3 or k - j > _MAX_INFO:
                pos = k   # not a fence: text
            elif self._fence_open:
                self._fence, self._fence_open, self._ws = "", False, []   # a fence of only calls: gone
                self._may_close = False
                start = pos = j
            elif text[k].isspace() or text[k] == "<":
                self._emit(self._text(text[start:i]), out)
                if self._fence:   # a second opener: the first one was text after all
                    self._emit(self._fence, out)
                    self._after_call = self._may_close = False
                self._fence, self._fence_open = "".join(self._ws) + text[i:k], False
                self._ws = []
                start = pos = k   # held until a call shows it opens a fence of calls
            else:
                pos = k
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
        pending = self._first_close >= 0
        if not pending:
            o = whole.rfind(OPEN, 0, k)
            self._piece = o + len(OPEN) if o >= 0 else 0
        parsed, state = self._judge(whole, k, pending)
        if state == IN_STRING:
            if not pending:
                self._first_close = k
            self._body, self._carry = [whole[:k + len(CLOSE)]], ""   # the tag is argument text: read on
            return whole[k + len(CLOSE):]
        if pending and state == NOT_JSON:
            end, piece = self._first_close, None   # the object never got past the first tag: it ended there
        else:
            end, piece = k, self._piece
        self._inside, self._body, self._carry, self._first_close, self._piece = False, [], "", -1, 0
        self._blocks(whole[:end], closed=True, out=out, piece=piece, parsed=parsed)
        return whole[end + len(CLOSE):]

    def _judge(self, whole: str, k: int, pending: bool) -> tuple[tuple[str, dict] | None, int]:
        """For the closing tag at k: the call the block ends as (if it is one) and where its JSON object ends
        (IN_STRING: the tag is argument text). May move the block's start back to the first opening tag."""
        piece = whole[self._piece:k]
        parsed = parse_block(piece, self._names)
        if not isinstance(parsed, str):
            return parsed, k
        state = object_end(piece)   # only a body that is no call is decoded: keeps the common path fast
        if state != IN_STRING and self._piece and not pending:
            # The opening tag before it may be argument text too: try the block from its start.
            parsed = parse_block(whole[:k], self._names)
            if not isinstance(parsed, str):
                self._piece = 0
                return parsed, k
            if object_end(whole[:k]) == IN_STRING:
                self._piece = 0
                return None, IN_STRING
        return None, state

    def _blocks(self, body: str, closed: bool, out: list[Event], piece: int | None = None,
                parsed: tuple[str, dict] | str | None = None) -> None:
        """Handle a finished block; an opening tag inside it means the blocks before it were never closed.
        From `piece` on (if given), the body is one block: its JSON strings hold the tags."""
        if piece is None:
            pieces = body.split(OPEN)
        else:
            pieces = (body[:piece - len(OPEN)].split(OPEN) if piece else []) + [body[piece:]]
        for n, piece_text in enumerate(pieces):
            if closed and n == len(pieces) - 1:
                self._block(piece_text, True, out, parsed)
            elif (split := self._split_unclosed(piece_text)) is not None:
                self._block(split[0], False, out)
                self._emit(self._text(split[1]), out)   # the model went on writing after the call
            else:
                self._block(piece_text, False, out)

    def _split_unclosed(self, body: str) -> tuple[str, str] | None:
        """An unclosed block that is not a call as a whole: the call its JSON starts with and the text after it."""
        if not isinstance(parse_block(body, self._names), str):
            return None   # the whole body is the call
        stripped = body.lstrip()
        end = value_end(stripped)
        if end is None:
            return None
        if isinstance(parse_block(stripped[:end], self._names), str):
            return None
        return stripped[:end], stripped[end:]

    def _block(self, body: str, closed: bool, out: list[Event],
               parsed: tuple[str, dict] | str | None = None) -> None:
        """Emit one block as a call, drop it (a second call when calls are not parallel), or show it as text."""
        if parsed is None:
            parsed = parse_block(body, self._names)
        if isinstance(parsed, str):
            log.debug("tool-call block shown as text: %s", parsed)
            self._emit(self._fence + "".join(self._ws) + OPEN + body + (CLOSE if closed else ""), out)
            self._ws, self._after_call, self._fence, self._fence_open = [], False, "", False
            self._may_close = False
            return
        self._ws, self._after_call, self._may_close = [], True, True   # whitespace before a call is layout
        if self._fence:
            self._fence, self._fence_open = self._fence.lstrip(), True   # a fence of calls, so far
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
        self._after_call = self._may_close = False
        if self._fence:   # real text: a held fence opener is content after all
            fence, self._fence, self._fence_open = self._fence, "", False
            return fence + "".join(held) + content
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
