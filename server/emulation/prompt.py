"""The one prompt builder: a canonical request becomes the single user message Kimi's web chat takes."""

from __future__ import annotations

from server.core.request import ChatRequest, Message, ResponseFormat, ToolResultPart
from server.emulation.json_text import NAMED_SCHEMAS, compact_json
from server.emulation.tool_markup import CLOSE as CALL_CLOSE
from server.emulation.tool_markup import OPEN as CALL_OPEN

LABELS = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool result"}


# JSON-schema keywords whose value maps names to subschemas: their keys are the caller's names (a property may well
# be called "title"), so they are never dropped as keywords.
_SUBSCHEMA = {"items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
              "unevaluatedItems", "unevaluatedProperties", "additionalItems", "contentSchema"}
_SUBSCHEMA_LISTS = {"anyOf", "allOf", "oneOf", "prefixItems"}


def build_prompt(request: ChatRequest, continuing: bool) -> str:
    """The text Kimi gets: the tools section, the conversation (or its new tail), the response-format section.

    A new Kimi chat knows nothing, so the whole conversation travels; a continued one already holds every turn up to
    its own last answer, so only what came after it is sent. The two sections are repeated on every turn because
    nothing else reminds Kimi of them.
    """
    names = _call_names(request.messages)
    body = _continued(request.messages, names) if continuing else fold(request.messages, names)
    sections = [tools_section(request) if request.offers_tools else "", body]
    if request.response_format.kind != "text":
        instruction = format_instruction(request.response_format)
        if request.offers_tools:
            instruction += " This is for your answer itself; a function call is written as the blocks instead."
        sections.append(instruction)
    return "\n\n".join(s for s in sections if s)


def fold(messages: list[Message], names: dict[str, str] | None = None) -> str:
    """One user message as it is; otherwise every turn as `Label: text`, blank-line separated, empty turns skipped."""
    if len(messages) == 1 and messages[0].role == "user" and not messages[0].tool_results:
        return messages[0].text
    names = _call_names(messages) if names is None else names
    blocks: list[str] = []
    for message in messages:
        blocks.extend(_blocks(message, names))
    return "\n\n".join(blocks)


def _continued(messages: list[Message], names: dict[str, str]) -> str:
    """Only the messages after Kimi's last answer (tool results, the new user message)."""
    return fold(continued_messages(messages), names)


def continued_messages(messages: list[Message]) -> list[Message]:
    """The messages a continued chat sends (their text and their files): those after Kimi's last answer; with
    none (no answer yet, or nothing after it), the newest user message with text; with no such message, all."""
    last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=None)
    if last is not None and last + 1 < len(messages):
        return messages[last + 1:]
    newest = next((m for m in reversed(messages) if m.role == "user" and m.text.strip()), None)
    return [newest] if newest is not None else messages


def _blocks(message: Message, names: dict[str, str]) -> list[str]:
    """A message's blocks: one per tool result it carries, then its text turn (with its calls as markup)."""
    blocks = [_result_block(result, message, names) for result in message.tool_results]
    text = message.text
    calls = message.tool_calls if message.role == "assistant" else []
    if calls:
        # Kimi sees its earlier calls in the very markup it is told to write, so it keeps writing that markup.
        text = "\n".join(([text] if text.strip() else []) + [call_markup(c.name, c.arguments) for c in calls])
    if text.strip():
        label = LABELS[message.role] + (f" ({message.name})" if message.name else "")
        blocks.append(f"{label}: {text}")
    return blocks


def _result_block(result: ToolResultPart, message: Message, names: dict[str, str]) -> str:
    """`Tool result (name, call id): content`, the call named so Kimi knows which of its calls this answers."""
    name = result.name or names.get(result.call_id) or (message.name if message.role == "tool" else None)
    who = f"{name}, {result.call_id}" if name else result.call_id
    content = f"[error] {result.content}" if result.is_error else result.content
    return f"{LABELS['tool']} ({who}): {content}"


def _call_names(messages: list[Message]) -> dict[str, str]:
    """Call id -> tool name, from the assistant's calls: OpenAI's tool messages carry only the id."""
    return {call.id: call.name for m in messages if m.role == "assistant" for call in m.tool_calls}


def call_markup(name: str, arguments: dict) -> str:
    """One call as the markup Kimi is told to write: `<tool_call>{"name":...,"arguments":{...}}</tool_call>`."""
    return CALL_OPEN + compact_json({"name": name, "arguments": arguments}) + CALL_CLOSE


def tools_section(request: ChatRequest) -> str:
    """The caller's functions, the one call markup, how results come back, and what tool_choice demands."""
    # Kimi has tools of its own (web search, a code sandbox): it must not confuse them with the caller's.
    lines = [("You can call these functions. The caller runs them, not you: they are not your own tools (web search, "
              "code sandbox). Never run them yourself and never invent their results."), "Functions:"]
    for tool in request.tools:
        lines.append(f"- {tool.name}: {tool.description}" if tool.description else f"- {tool.name}")
        lines.append("  Parameters (JSON schema): " + compact_json(slim_schema(tool.parameters)))
    lines.append("To call a function, write this block, with arguments as a JSON object matching its parameters:")
    lines.append(CALL_OPEN + '{"name": "...", "arguments": {...}}' + CALL_CLOSE)
    if request.parallel_tool_calls:
        lines.append("One block per call; for several calls, write the blocks one after another.")
    else:
        lines.append("Make at most one call per answer: a single block.")
    lines.append("Write nothing after the blocks. The results come back in the next message as "
                 '"Tool result (name, id): ...".')
    choice = request.tool_choice
    if choice.mode == "required":
        lines.append("You must answer with at least one function call.")
    elif choice.mode == "named":
        lines.append(f"You must call the function {choice.name} in this answer.")
    else:
        lines.append("Call a function when it helps; otherwise answer normally, without any block.")
    return "\n".join(lines)


def slim_schema(schema: object) -> object:
    """The schema without what carries no meaning for Kimi ($schema, titles, additionalProperties: false)."""
    if not isinstance(schema, dict):
        return schema
    slim = {}
    for key, value in schema.items():
        if key in ("$schema", "title") or (key == "additionalProperties" and value is False):
            continue
        if key in NAMED_SCHEMAS and isinstance(value, dict):
            value = {name: slim_schema(sub) for name, sub in value.items()}
        elif key in _SUBSCHEMA:
            value = [slim_schema(s) for s in value] if isinstance(value, list) else slim_schema(value)
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            value = [slim_schema(s) for s in value]
        slim[key] = value
    return slim


def format_instruction(fmt: ResponseFormat) -> str:
    """What the answer must be for a json_object or json_schema response format."""
    bare = "Nothing else: no prose before or after it, no Markdown code fences."
    if fmt.kind == "json_object":
        return f"Answer with exactly one JSON object. {bare}"
    if fmt.kind == "json_schema":
        named = f' "{fmt.name}"' if fmt.name else ""
        schema = compact_json(fmt.schema if fmt.schema is not None else {})
        return f"Answer with exactly one JSON value, valid against the JSON schema{named}: {schema} {bare}"
    raise ValueError(f"response_format.kind: expected text, json_object or json_schema, got {fmt.kind!r}")
