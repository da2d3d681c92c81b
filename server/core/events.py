"""Typed answer events: what an answer is made of, whatever dialect renders it and whatever protocol brought it.

An answer is read as batches (`list[Event]`): one batch per upstream read, so a writer can send a batch in
one write; an empty batch means the upstream has been silent for a keepalive interval. Pacing (flushes,
keepalive comments) is the writer's business; the events carry only meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's visible text."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A piece of the model's thinking (shown apart from the answer)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """A tool call begins: `index` counts the answer's calls from 0; `id` is unique (call_...)."""

    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a call's arguments, as JSON text (the pieces of one call concatenate to a JSON object)."""

    index: int
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolCallEnd:
    """A call is complete; `arguments` is the parsed object the deltas spelled."""

    index: int
    id: str
    name: str
    arguments: dict


@dataclass(frozen=True, slots=True)
class Source:
    """A web search result the answer drew on."""

    title: str
    url: str
    site: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts (estimates: Kimi's web chat reports none)."""

    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Finish:
    """The answer is complete: reason is stop, length or tool_calls."""

    reason: str
    usage: Usage | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The answer broke off after it started: `failure` is a core.errors.Failure."""

    failure: Exception


Event = TextDelta | ReasoningDelta | ToolCallStart | ToolCallDelta | ToolCallEnd | Source | Finish | Failed


@dataclass
class Collected:
    """A whole answer gathered from its events (every non-stream path)."""

    content: list[TextDelta | Source] = field(default_factory=list)   # text and sources in arrival order
    reasoning: str = ""
    calls: list[ToolCallEnd] = field(default_factory=list)
    finish: Finish | None = None
