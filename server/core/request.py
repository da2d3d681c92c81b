"""The canonical request: what every dialect's request becomes, in plain dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field

from server.core.attachments import Attachment


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class AttachmentPart:
    """An image or file the caller sent (decoded or downloaded later, before Kimi is asked)."""

    attachment: Attachment


@dataclass(frozen=True, slots=True)
class ToolCallPart:
    """A call the assistant made earlier in the conversation."""

    id: str
    name: str
    arguments: dict


@dataclass(frozen=True, slots=True)
class ToolResultPart:
    """The caller's answer to a tool call."""

    call_id: str
    name: str | None
    content: str
    is_error: bool = False


Part = TextPart | AttachmentPart | ToolCallPart | ToolResultPart
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True, slots=True)
class Message:
    """One turn: role is system, user, assistant or tool; `name` is the speaker's name when given."""

    role: str
    parts: tuple[Part, ...]
    name: str | None = None

    @property
    def text(self) -> str:
        """The message's text parts, joined by newlines."""
        return "\n".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def attachments(self) -> list[Attachment]:
        return [p.attachment for p in self.parts if isinstance(p, AttachmentPart)]

    @property
    def tool_calls(self) -> list[ToolCallPart]:
        return [p for p in self.parts if isinstance(p, ToolCallPart)]

    @property
    def tool_results(self) -> list[ToolResultPart]:
        return [p for p in self.parts if isinstance(p, ToolResultPart)]


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the caller offers: its parameters are a JSON schema."""

    name: str
    description: str = ""
    parameters: dict = field(default_factory=dict)
    strict: bool = False


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """mode is auto, none, required, or named (then `name` is the tool that must be called)."""

    mode: str = "auto"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """kind is text, json_object or json_schema (then `schema`, and the schema's `name`)."""

    kind: str = "text"
    schema: dict | None = None
    name: str = ""
    strict: bool = False


@dataclass
class ChatRequest:
    """A validated request, whatever dialect it came in."""

    model: str
    messages: list[Message]
    stream: bool = False
    include_usage: bool = False
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    response_format: ResponseFormat = field(default_factory=ResponseFormat)
    reasoning_effort: str | None = None   # OpenAI's level; the model catalog maps it onto Kimi's
    use_search: bool = False
    conversation_id: str | None = None    # kimi-free-api's native continuation; "" or "none" starts one
    ignored: list[str] = field(default_factory=list)   # vendor extras accepted and ignored

    @property
    def offers_tools(self) -> bool:
        """Whether the answer may hold tool calls (tools offered and tool_choice is not none)."""
        return bool(self.tools) and self.tool_choice.mode != "none"
