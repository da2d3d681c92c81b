"""Answer events as OpenAI chat-completion JSON: stream chunks as SSE frames, and the whole response body."""

from __future__ import annotations

import secrets
import time

import orjson

from server.core.errors import Failure
from server.core.events import (Collected, Failed, Finish, ReasoningDelta, Source, TextDelta, ToolCallDelta,
                                ToolCallEnd, ToolCallStart, Usage)
from server.dialects.openai_chat.errors import error_body

DONE = b"data: [DONE]\n\n"


def new_completion_id() -> str:
    """A fresh `chatcmpl-...` id."""
    return "chatcmpl-" + secrets.token_hex(12)


def sse(data: dict) -> bytes:
    """One frame: exactly `data: <one-line JSON>` and a blank line."""
    return b"data: " + orjson.dumps(data) + b"\n\n"


def usage_body(usage: Usage) -> dict:
    """OpenAI's `usage` object; the reasoning detail only when there was reasoning."""
    body = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}
    if usage.reasoning_tokens > 0:
        body["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return body


def _finish_reason(reason: str, legacy_functions: bool) -> str:
    """The legacy `functions` API names a call's finish `function_call`."""
    return "function_call" if legacy_functions and reason == "tool_calls" else reason


class SourceLines:
    """Search results as numbered Markdown lines: OpenAI's chat completions have no citation field."""

    def __init__(self) -> None:
        self.count = 0
        self._separated = False

    def line(self, source: Source) -> str:
        """One numbered line, with the `Sources:` heading before the first."""
        self.count += 1
        # Brackets in a title would end the Markdown link text early.
        title = (source.title or source.url or "source").replace("]", ")").replace("[", "(")
        site = f" ({source.site})" if source.site else ""
        text = f"{self.count}. [{title}]({source.url}){site}\n" if source.url else f"{self.count}. {title}{site}\n"
        return ("Sources:\n" if self.count == 1 else "") + text

    def separator(self) -> str:
        """A blank line between the sources and the first answer text ('' when there were none)."""
        if self.count and not self._separated:
            self._separated = True
            return "\n"
        return ""


class StreamRenderer:
    """The SSE frames of one streamed answer, chunks sharing one id, created time and model as OpenAI's do."""

    def __init__(self, model: str, include_usage: bool, completion_id: str | None = None,
                 legacy_functions: bool = False) -> None:
        self.id = completion_id or new_completion_id()
        self.created = int(time.time())
        self.model, self.include_usage, self.legacy_functions = model, include_usage, legacy_functions
        self.sources = SourceLines()
        self.finish: Finish | None = None

    def _chunk(self, choices: list, **extra) -> bytes:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "system_fingerprint": None, "choices": choices, **extra}
        if self.include_usage and "usage" not in body:
            body["usage"] = None
        return sse(body)

    def _delta(self, delta: dict, finish_reason: str | None = None) -> bytes:
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])

    def head(self) -> bytes:
        """The first chunk: the assistant's role and empty content."""
        return self._delta({"role": "assistant", "content": ""})

    def batch(self, events: list) -> bytes:
        """The frames for one batch of events, in one piece (b"" when there is nothing to send)."""
        return b"".join(self._event(event) for event in events)

    def _event(self, event) -> bytes:
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            gap = self.sources.separator()
            # The blank line after the sources is its own chunk, as it always was.
            return (self._delta({"content": gap}) if gap else b"") + self._delta({"content": event.text})
        if isinstance(event, ReasoningDelta):
            return self._delta({"reasoning_content": event.text}) if event.text else b""
        if isinstance(event, Source):
            return self._delta({"content": self.sources.line(event)})
        if isinstance(event, ToolCallStart):
            return self._call_start(event)
        if isinstance(event, ToolCallDelta):
            return self._call_arguments(event)
        if isinstance(event, ToolCallEnd):
            return b""   # the deltas already spelled the arguments
        if isinstance(event, Finish):
            self.finish = event
            return self._delta({}, finish_reason=_finish_reason(event.reason, self.legacy_functions))
        if isinstance(event, Failed):
            return self.error(event.failure)
        raise TypeError(f"not an answer event: {event!r}")

    def _call_start(self, event: ToolCallStart) -> bytes:
        if self.legacy_functions:
            # The legacy shape holds one call: the request asked for no parallel calls, so none follow.
            if event.index:
                return b""
            return self._delta({"function_call": {"name": event.name, "arguments": ""}})
        return self._delta({"tool_calls": [{"index": event.index, "id": event.id, "type": "function",
                                            "function": {"name": event.name, "arguments": ""}}]})

    def _call_arguments(self, event: ToolCallDelta) -> bytes:
        if not event.arguments or (self.legacy_functions and event.index):
            return b""
        if self.legacy_functions:
            return self._delta({"function_call": {"arguments": event.arguments}})
        return self._delta({"tool_calls": [{"index": event.index, "function": {"arguments": event.arguments}}]})

    def tail(self, usage: Usage | None) -> bytes:
        """The end of a complete answer: the usage chunk (choices []) when asked for, then [DONE]."""
        if not self.include_usage:
            return DONE
        usage = usage or (self.finish.usage if self.finish else None)
        if usage is None:
            raise ValueError("include_usage was asked for but no usage was given, nor carried by the Finish event")
        return self._chunk([], usage=usage_body(usage)) + DONE

    def error(self, failure: Failure) -> bytes:
        """An error after the head went out: OpenAI's envelope in a data frame (no [DONE] follows)."""
        return sse(error_body(failure))


def _content(collected: Collected) -> str:
    """The visible text as a stream shows it: sources as Markdown where they arrived, a blank line before the
    text that follows them."""
    lines, parts = SourceLines(), []
    for item in collected.content:
        if isinstance(item, Source):
            parts.append(lines.line(item))
        elif item.text:
            parts.append(lines.separator() + item.text)
    return "".join(parts)


def completion_body(model: str, collected: Collected, usage: Usage, completion_id: str | None = None,
                    legacy_functions: bool = False) -> dict:
    """The non-stream response."""
    content = _content(collected)
    message = {"role": "assistant", "content": content or (None if collected.calls else content), "refusal": None}
    if collected.reasoning:
        message["reasoning_content"] = collected.reasoning
    if collected.calls and legacy_functions:
        first = collected.calls[0]
        message["function_call"] = {"name": first.name, "arguments": orjson.dumps(first.arguments).decode()}
    elif collected.calls:
        message["tool_calls"] = [{"id": call.id, "type": "function",
                                  "function": {"name": call.name, "arguments": orjson.dumps(call.arguments).decode()}}
                                 for call in collected.calls]
    reason = collected.finish.reason if collected.finish else "stop"
    return {"id": completion_id or new_completion_id(), "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": _finish_reason(reason, legacy_functions)}],
            "usage": usage_body(usage)}
