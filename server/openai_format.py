"""OpenAI's chat-completion shapes: stream chunks as SSE frames, and the whole response."""

from __future__ import annotations

import secrets
import time

import orjson


def new_completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def sse(data: dict) -> bytes:
    """One frame: exactly `data: <one-line JSON>` and a blank line."""
    return b"data: " + orjson.dumps(data) + b"\n\n"


DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keepalive\n\n"


class ChunkFactory:
    """Chunks that share one id, created time and model, as OpenAI's do."""

    def __init__(self, model: str, include_usage: bool, completion_id: str | None = None) -> None:
        self.id = completion_id or new_completion_id()
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage

    def _chunk(self, choices: list, **extra) -> bytes:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "system_fingerprint": None, "choices": choices, **extra}
        if self.include_usage and "usage" not in body:
            body["usage"] = None
        return sse(body)

    def delta(self, delta: dict, finish_reason: str | None = None) -> bytes:
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])

    def role(self) -> bytes:
        return self.delta({"role": "assistant", "content": ""})

    def usage(self, usage: dict) -> bytes:
        return self._chunk([], usage=usage)


def error_frame(error: dict) -> bytes:
    """An error after the stream started: OpenAI's envelope in a data frame."""
    return sse(error)


def completion_body(model: str, content: str, reasoning: str, finish_reason: str, usage: dict,
                    completion_id: str | None = None) -> dict:
    """The non-stream response."""
    message = {"role": "assistant", "content": content, "refusal": None}
    if reasoning:
        message["reasoning_content"] = reasoning
    return {"id": completion_id or new_completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage}
