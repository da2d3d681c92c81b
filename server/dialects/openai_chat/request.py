"""An OpenAI chat-completions body, strictly validated (an allow-list of fields, each type-checked), as the
canonical request."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from server.core.attachments import Attachment
from server.core.errors import bad_request
from server.core.request import (
    AttachmentPart,
    ChatRequest,
    Message,
    Part,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from server.dialects.openai_chat.tools import (
    missing,
    parse_function_call,
    parse_response_format,
    parse_tool_calls,
    parse_tool_options,
    synthetic_id,
    wrong_type,
)

log = logging.getLogger("server.dialects.openai_chat.request")

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
CANONICAL_ROLE = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
                  "tool": "tool", "function": "tool"}
MESSAGE_FIELDS = {"role", "content", "name", "tool_calls", "tool_call_id", "function_call", "refusal", "audio",
                  "reasoning_content", "annotations", "prefix", "partial"}
TEXT_PART_TYPES = ("text", "input_text")
# Accepted by OpenAI but carrying nothing Kimi's web chat can use.
UNSUPPORTED_PART_TYPES = ("input_audio", "refusal")

# Vendor extras that other OpenAI-compatible servers take: accepted and ignored, logged at debug.
VENDOR_EXTRAS = {"top_k", "min_p", "top_a", "repetition_penalty", "length_penalty", "enable_thinking",
                 "thinking", "chat_template_kwargs", "include_reasoning", "reasoning", "transforms", "provider",
                 "route", "models", "safe_prompt", "ignore_eos", "skip_special_tokens", "echo", "best_of",
                 "min_tokens", "stop_token_ids", "use_beam_search", "return_citations", "search_domain_filter",
                 "extra_headers", "extra_query", "cache_control", "usage"}


@dataclass(slots=True)
class ParsedChat:
    """The canonical request, and whether the caller used the legacy functions/function_call (answered alike)."""

    request: ChatRequest
    legacy_functions: bool


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class OutOfRange(str):
    """A check's answer when the value has the right type but lies outside the allowed range."""


def _num_in(lo: float, hi: float) -> Callable[[object], str | None]:
    def check(v):
        if not _is_num(v):
            return f"a number from {lo:g} to {hi:g}"
        return None if lo <= v <= hi else OutOfRange(f"a number from {lo:g} to {hi:g}")
    return check


def _int_in(lo: int, hi: int | None = None) -> Callable[[object], str | None]:
    def check(v):
        expected = f"an integer from {lo}" + (f" to {hi}" if hi is not None else " up")
        if not _is_int(v):
            return expected
        return None if lo <= v and (hi is None or v <= hi) else OutOfRange(expected)
    return check


def _of(*types: type, what: str) -> Callable[[object], str | None]:
    def check(v):
        if isinstance(v, bool) and bool not in types:
            return what
        return None if isinstance(v, types) else what
    return check


def _stop(v) -> str | None:
    if isinstance(v, str):
        return None
    if isinstance(v, list) and len(v) <= 4 and all(isinstance(s, str) for s in v):
        return None
    return "a string or a list of up to 4 strings"


def _tool_choice(v) -> str | None:
    if v in ("none", "auto", "required") or isinstance(v, dict):
        return None
    return "'none', 'auto', 'required' or an object"


def _function_call(v) -> str | None:
    return None if v in ("none", "auto") or isinstance(v, dict) else "'none', 'auto' or an object"


def _response_format(v) -> str | None:
    # Only the outer type here: the object's own fields are checked by tools.parse_response_format.
    return None if isinstance(v, dict) else "an object whose type is 'text', 'json_object' or 'json_schema'"


_BOOL = _of(bool, what="true or false")
_STR = _of(str, what="a string")
_OBJ = _of(dict, what="an object")
_LIST = _of(list, what="a list")

# Every OpenAI chat-completions request field (current and deprecated), with its check.
OPENAI_FIELDS: dict[str, Callable[[object], str | None]] = {
    "audio": _OBJ, "frequency_penalty": _num_in(-2, 2), "function_call": _function_call, "functions": _LIST,
    "logit_bias": _OBJ, "logprobs": _BOOL, "max_completion_tokens": _int_in(1), "max_tokens": _int_in(1),
    "metadata": _OBJ, "modalities": _LIST, "n": _int_in(1, 128), "parallel_tool_calls": _BOOL,
    "prediction": _OBJ, "presence_penalty": _num_in(-2, 2), "prompt_cache_key": _STR, "reasoning_effort": _STR,
    "response_format": _response_format, "safety_identifier": _STR, "seed": _of(int, what="an integer"),
    "service_tier": _STR, "stop": _stop, "store": _BOOL, "stream": _BOOL, "stream_options": _OBJ,
    "temperature": _num_in(0, 2), "tool_choice": _tool_choice, "tools": _LIST, "top_logprobs": _int_in(0, 20),
    "top_p": _num_in(0, 1), "user": _STR, "web_search_options": _OBJ, "verbosity": _STR,
}
# Kimi's own extras.
KIMI_FIELDS: dict[str, Callable[[object], str | None]] = {"use_search": _BOOL, "conversation_id": _STR}


def parse_chat_request(body: dict) -> ParsedChat:
    """Validate `body` into the canonical request; raise a bad_request Failure whose `field` names the first bad
    field."""
    ignored = _check_fields(body)
    model = body.get("model")
    if model is None:
        raise bad_request("Missing required parameter: 'model'.", "model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("Invalid type for 'model': expected a non-empty string.", "model")
    if (body.get("n") or 1) > 1:
        raise bad_request("n > 1 is not supported: Kimi returns one answer per request. Send n=1 (or leave it out).",
                          "n")
    stream_options = body.get("stream_options") or {}
    for key, value in stream_options.items():
        if key not in ("include_usage", "include_obfuscation"):
            raise bad_request(f"Unrecognized argument in stream_options: {key}", f"stream_options.{key}")
        if not isinstance(value, bool):
            raise bad_request(f"Invalid type for 'stream_options.{key}': expected true or false.",
                              f"stream_options.{key}")
    options = parse_tool_options(body)
    request = ChatRequest(
        model=model.strip(), messages=_messages(body.get("messages")), stream=bool(body.get("stream")),
        include_usage=bool(stream_options.get("include_usage")), tools=options.tools, tool_choice=options.choice,
        parallel_tool_calls=options.parallel, response_format=parse_response_format(body.get("response_format")),
        reasoning_effort=body.get("reasoning_effort"), use_search=bool(body.get("use_search")),
        conversation_id=body.get("conversation_id") if "conversation_id" in body else None, ignored=ignored)
    return ParsedChat(request=request, legacy_functions=options.legacy)


def _check_fields(body: dict) -> list[str]:
    """Refuse unknown fields and values of the wrong type or range; return the vendor extras ignored."""
    ignored = []
    for name, value in body.items():
        if name in ("model", "messages"):
            continue
        check = OPENAI_FIELDS.get(name) or KIMI_FIELDS.get(name)
        if check is None:
            if name in VENDOR_EXTRAS:
                ignored.append(name)
                continue
            raise bad_request(f"Unrecognized request argument supplied: {name}", name)
        if value is not None and (problem := check(value)):
            if isinstance(problem, OutOfRange):
                raise bad_request(f"'{name}' is out of range: got {value}, expected {problem}.", name)
            raise bad_request(f"Invalid type for '{name}': expected {problem}.", name)
    if ignored:
        log.debug("ignoring vendor extras %s", ignored)
    return ignored


def _messages(raw: object) -> list[Message]:
    if raw is None:
        raise bad_request("Missing required parameter: 'messages'.", "messages")
    if not isinstance(raw, list):
        raise bad_request("Invalid type for 'messages': expected a list of message objects.", "messages")
    if not raw:
        raise bad_request("'messages' must contain at least one message.", "messages")
    calls: dict[str, str] = {}      # call id -> tool name, for the results that answer them
    legacy: dict[str, str] = {}     # tool name -> id of its latest legacy function_call
    out = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"Invalid type for '{where}': expected an object.", where)
        for key in message:
            if key not in MESSAGE_FIELDS:
                raise bad_request(f"Unrecognized argument in {where}: {key}", f"{where}.{key}")
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(f"Invalid value for '{where}.role': expected one of {', '.join(ROLES)}.",
                              f"{where}.role")
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            raise wrong_type(f"{where}.name", "a string")
        text, attachments = _content(message.get("content"), f"{where}.content", role)
        parts: list[Part] = [TextPart(text)] if text.strip() else []
        parts += [AttachmentPart(a) for a in attachments]
        parts += _calls(message, where, i, role, calls, legacy)
        # A result's text is its content, not a separate part of the message.
        if role == "tool":
            parts = [_tool_result(message, where, text, calls)]
        elif role == "function":
            parts = [_function_result(name, where, i, text, legacy)]
        if parts:   # a message with nothing in it is skipped, as the prompt always did
            out.append(Message(role=CANONICAL_ROLE[role], parts=tuple(parts), name=name))
    if not out:
        raise bad_request("Every message is empty: send some text.", "messages")
    return out


def _calls(message: dict, where: str, index: int, role: str, calls: dict[str, str],
           legacy: dict[str, str]) -> list[ToolCallPart]:
    """The assistant's tool_calls and legacy function_call, remembered for the results that follow."""
    for key in ("tool_calls", "function_call"):
        if message.get(key) is not None and role != "assistant":
            raise bad_request(f"Only assistant messages can carry '{key}' ('{where}').", f"{where}.{key}")
    found = parse_tool_calls(message.get("tool_calls"), f"{where}.tool_calls")
    for call in found:
        calls[call.id] = call.name
    if (call := parse_function_call(message.get("function_call"), f"{where}.function_call", index)) is not None:
        legacy[call.name] = call.id
        found.append(call)
    return found


def _tool_result(message: dict, where: str, text: str, calls: dict[str, str]) -> ToolResultPart:
    call_id = message.get("tool_call_id")
    if call_id is None:
        raise missing(f"{where}.tool_call_id")
    if not isinstance(call_id, str):
        raise wrong_type(f"{where}.tool_call_id", "a string")
    return ToolResultPart(call_id=call_id, name=calls.get(call_id), content=text)


def _function_result(name: str | None, where: str, index: int, text: str, legacy: dict[str, str]) -> ToolResultPart:
    # A legacy result names its function, not a call: it answers the latest call of that name.
    if name is None:
        raise missing(f"{where}.name")
    return ToolResultPart(call_id=legacy.get(name) or synthetic_id(name, index), name=name, content=text)


def _content(content: object, where: str, role: str) -> tuple[str, list[Attachment]]:
    if content is None:
        if role in ("assistant", "function"):
            return "", []   # an assistant turn that only called tools
        raise bad_request(f"Missing required parameter: '{where}'.", where)
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise bad_request(f"Invalid type for '{where}': expected a string or a list of content parts.", where)
    texts, attachments = [], []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise bad_request(f"Invalid type for '{at}': expected an object.", at)
        kind = part.get("type")
        if kind in TEXT_PART_TYPES:
            if not isinstance(part.get("text"), str):
                raise bad_request(f"Invalid type for '{at}.text': expected a string.", f"{at}.text")
            texts.append(part["text"])
        elif kind in ("image_url", "file"):
            if role != "user":
                raise bad_request(f"Only user messages can carry images and files ('{at}').", f"{at}.type")
            attachments.append(_attachment(part, kind, at))
        elif kind in UNSUPPORTED_PART_TYPES:
            raise bad_request(f"Content parts of type '{kind}' are not supported by Kimi's web chat.", f"{at}.type")
        else:
            raise bad_request(f"Invalid value for '{at}.type': expected 'text', 'image_url' or 'file'.", f"{at}.type")
    return "\n".join(texts), attachments


def _attachment(part: dict, kind: str, at: str) -> Attachment:
    """An image_url part, OpenAI's file part ({file_data, filename}), or kimi-free-api's {file_url: {url}}."""
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return Attachment("image", _url(url, f"{at}.image_url.url"), "", f"{at}.image_url.url")
    if isinstance(part.get("file_url"), (dict, str)):
        ref = part["file_url"]
        url = ref.get("url") if isinstance(ref, dict) else ref
        return Attachment("file", _url(url, f"{at}.file_url.url"), "", f"{at}.file_url.url")
    file = part.get("file")
    if not isinstance(file, dict):
        raise bad_request(f"Invalid type for '{at}.file': expected an object with file_data.", f"{at}.file")
    if "file_id" in file and "file_data" not in file:
        raise bad_request("Files uploaded to OpenAI's Files API cannot be used here; send 'file_data' (base64) "
                          "instead.", f"{at}.file.file_id")
    data, name = file.get("file_data"), file.get("filename", "")
    if not isinstance(data, str) or not data.strip():
        raise bad_request(f"Invalid type for '{at}.file.file_data': expected base64 or a data: URL.",
                          f"{at}.file.file_data")
    if not isinstance(name, str):
        raise bad_request(f"Invalid type for '{at}.file.filename': expected a string.", f"{at}.file.filename")
    return Attachment("file", data, name, f"{at}.file.file_data")


def _url(value: object, param: str) -> str:
    # An http(s) scheme in any case (`HTTP://`) is http.
    if not isinstance(value, str) or not (value.strip()[:8].lower().startswith(("http://", "https://"))
                                          or value.strip().startswith("data:")):
        raise bad_request(f"Invalid value for '{param}': expected an http(s) URL or a data: URL.", param)
    return value.strip()
