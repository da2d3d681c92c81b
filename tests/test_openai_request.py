"""The OpenAI chat-completions body -> canonical request: each valid shape, and each malformed one's 400."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.core.attachments import Attachment
from server.core.errors import BAD_REQUEST, Failure
from server.core.request import (
    AttachmentPart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
)
from server.dialects.openai_chat.request import OPENAI_FIELDS, parse_chat_request

USER = [{"role": "user", "content": "hi"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "clock"}}


def parse(**fields):
    """Parse a body with USER messages unless given, returning the canonical request."""
    return parse_chat_request({"model": "kimi", "messages": USER, **fields}).request


def failure(body: dict) -> Failure:
    """The Failure a body raises; it must be a bad request."""
    with pytest.raises(Failure) as caught:
        parse_chat_request(body)
    assert caught.value.kind == BAD_REQUEST
    return caught.value


def test_a_plain_request_gets_the_defaults():
    parsed = parse_chat_request({"model": " kimi ", "messages": USER})
    request = parsed.request
    assert parsed.legacy_functions is False
    assert request.model == "kimi" and request.messages == [Message("user", (TextPart("hi"),))]
    assert request.stream is False and request.include_usage is False and request.use_search is False
    assert request.tools == [] and request.tool_choice == ToolChoice("auto") and request.parallel_tool_calls is True
    assert request.response_format == ResponseFormat("text") and request.reasoning_effort is None
    assert request.conversation_id is None and request.ignored == [] and not request.offers_tools


def test_the_shared_options_are_carried_over():
    request = parse(stream=True, stream_options={"include_usage": True}, use_search=True, reasoning_effort="high",
                    conversation_id="", top_k=5, repetition_penalty=1.1)
    assert request.stream and request.include_usage and request.use_search
    assert request.reasoning_effort == "high" and request.conversation_id == "" and request.ignored == [
        "top_k", "repetition_penalty"]


def test_every_field_may_be_null():
    request = parse(**{name: None for name in OPENAI_FIELDS})
    assert request.tools == [] and request.tool_choice == ToolChoice() and request.parallel_tool_calls is True
    assert request.response_format == ResponseFormat()


def test_roles_map_onto_the_four_canonical_ones_and_text_parts_join():
    request = parse(messages=[
        {"role": "system", "content": "Be brief."}, {"role": "developer", "content": "dev note", "name": "ops"},
        {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "input_text", "text": "two"}]},
        {"role": "assistant", "content": "ok"}])
    assert request.messages == [
        Message("system", (TextPart("Be brief."),)), Message("system", (TextPart("dev note"),), name="ops"),
        Message("user", (TextPart("part one\ntwo"),)), Message("assistant", (TextPart("ok"),))]


def test_attachments_become_attachment_parts_as_the_schema_built_them():
    content = [{"type": "text", "text": "look"},
               {"type": "image_url", "image_url": {"url": " https://x.test/a.png "}},
               {"type": "image_url", "image_url": "data:image/png;base64,AAAA"},
               {"type": "file", "file": {"file_data": "QUJD", "filename": "a.pdf"}},
               {"type": "file", "file_url": {"url": "HTTP://x.test/doc.pdf"}}]
    (message,) = parse(messages=[{"role": "user", "content": content}]).messages
    at = "messages[0].content"
    assert message.parts == (
        TextPart("look"),
        AttachmentPart(Attachment("image", "https://x.test/a.png", "", f"{at}[1].image_url.url")),
        AttachmentPart(Attachment("image", "data:image/png;base64,AAAA", "", f"{at}[2].image_url.url")),
        AttachmentPart(Attachment("file", "QUJD", "a.pdf", f"{at}[3].file.file_data")),
        AttachmentPart(Attachment("file", "HTTP://x.test/doc.pdf", "", f"{at}[4].file_url.url")))


def test_empty_messages_are_skipped_but_an_attachment_alone_is_kept():
    image = {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}
    request = parse(messages=[{"role": "system", "content": "  "}, {"role": "assistant", "content": None},
                              {"role": "user", "content": [image]}])
    assert [m.role for m in request.messages] == ["user"] and request.messages[0].attachments[0].kind == "image"


def test_assistant_tool_calls_and_tool_results_pair_up_by_id():
    request = parse(messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
            {"id": "c2", "type": "function", "function": {"name": "clock", "arguments": "{}"}, "index": 1}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "noon"}]},
        {"role": "tool", "tool_call_id": "elsewhere", "content": ""}])
    assert request.messages[1:] == [
        Message("assistant", (ToolCallPart("c1", "get_weather", {"city": "Oslo"}), ToolCallPart("c2", "clock", {}))),
        Message("tool", (ToolResultPart("c1", "get_weather", "sunny"),)),
        Message("tool", (ToolResultPart("c2", "clock", "noon"),)),
        Message("tool", (ToolResultPart("elsewhere", None, ""),))]


def test_an_assistant_text_before_its_calls_is_kept_first():
    request = parse(messages=USER + [{"role": "assistant", "content": "Let me check.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "clock", "arguments": "{}"}}]}])
    assert request.messages[1].parts == (TextPart("Let me check."), ToolCallPart("c1", "clock", {}))


def test_legacy_function_calls_get_stable_ids_and_results_answer_the_latest_call_of_that_name():
    messages = USER + [
        {"role": "assistant", "content": None, "function_call": {"name": "clock", "arguments": "{}"}},
        {"role": "function", "name": "clock", "content": "noon"},
        {"role": "assistant", "content": None, "function_call": {"name": "clock", "arguments": '{"tz": "UTC"}'}},
        {"role": "function", "name": "clock", "content": None},
        {"role": "function", "name": "never_called", "content": "x"}]
    first, again = parse(messages=messages), parse(messages=messages)
    assert first.messages == again.messages
    calls = [m.tool_calls[0] for m in first.messages if m.role == "assistant"]
    results = [m.tool_results[0] for m in first.messages if m.role == "tool"]
    assert [c.arguments for c in calls] == [{}, {"tz": "UTC"}] and calls[0].id != calls[1].id
    assert [(r.call_id, r.name, r.content) for r in results[:2]] == [(calls[0].id, "clock", "noon"),
                                                                     (calls[1].id, "clock", "")]
    assert results[2].name == "never_called" and results[2].call_id not in {c.id for c in calls}


def test_a_message_holding_only_a_call_or_a_result_is_not_empty():
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "clock", "arguments": "{}"}}]}
    assert len(parse(messages=[call]).messages) == 1
    assert len(parse(messages=[{"role": "tool", "tool_call_id": "c1", "content": ""}]).messages) == 1


def test_tools_become_canonical_tools_with_auto_as_the_default_choice():
    request = parse(tools=[WEATHER, CLOCK], parallel_tool_calls=False)
    assert request.tools == [
        Tool("get_weather", "The weather in a city.", WEATHER["function"]["parameters"], strict=True),
        Tool("clock", "", {}, strict=False)]
    assert request.tool_choice == ToolChoice("auto") and request.parallel_tool_calls is False and request.offers_tools


@pytest.mark.parametrize("raw,choice", [
    ("auto", ToolChoice("auto")), ("none", ToolChoice("none")), ("required", ToolChoice("required")),
    ({"type": "function", "function": {"name": "clock"}}, ToolChoice("named", "clock")),
])
def test_each_tool_choice(raw, choice):
    request = parse(tools=[WEATHER, CLOCK], tool_choice=raw)
    assert request.tool_choice == choice and request.offers_tools == (choice.mode != "none")


def test_none_and_auto_need_no_tools():
    assert parse(tool_choice="none").tool_choice == ToolChoice("none")
    assert parse(tool_choice="auto", tools=[]).tools == []


def test_legacy_functions_become_tools_and_function_call_the_choice():
    function = {key: value for key, value in WEATHER["function"].items() if key != "strict"}
    parsed = parse_chat_request({"model": "kimi", "messages": USER, "functions": [function],
                                 "function_call": {"name": "get_weather"}})
    assert parsed.legacy_functions is True
    assert parsed.request.tools == [Tool("get_weather", "The weather in a city.",
                                         WEATHER["function"]["parameters"])]
    assert parsed.request.tool_choice == ToolChoice("named", "get_weather")
    legacy = parse_chat_request({"model": "kimi", "messages": USER, "functions": [{"name": "f"}]})
    assert legacy.legacy_functions and legacy.request.tool_choice == ToolChoice("auto")
    # message.function_call holds one call: Kimi is never asked for several.
    assert legacy.request.parallel_tool_calls is False
    assert parse(functions=[{"name": "f"}], function_call="none").tool_choice == ToolChoice("none")


@pytest.mark.parametrize("raw,expected", [
    ({"type": "text"}, ResponseFormat("text")),
    ({"type": "json_object"}, ResponseFormat("json_object")),
    ({"type": "json_schema", "json_schema": {"name": "Answer", "description": "d", "strict": True,
                                             "schema": {"type": "object"}}},
     ResponseFormat("json_schema", {"type": "object"}, "Answer", True)),
    ({"type": "json_schema", "json_schema": {"name": "a-b_9"}}, ResponseFormat("json_schema", None, "a-b_9")),
])
def test_each_response_format(raw, expected):
    assert parse(response_format=raw).response_format == expected


def _nested(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return {"type": "object", "properties": {}, "items": schema}


def _tool(**function):
    return [{"type": "function", "function": {"name": "f", **function}}]


MALFORMED = [
    # tools
    ({"tools": [5]}, "tools[0]"),
    ({"tools": [{"function": {"name": "f"}}]}, "tools[0].type"),
    ({"tools": [{"type": "code_interpreter", "function": {"name": "f"}}]}, "tools[0].type"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": [{"type": "function", "function": "f"}]}, "tools[0].function"),
    ({"tools": [{"type": "function", "function": {"name": "f"}, "extra": 1}]}, "tools[0].extra"),
    ({"tools": [CLOCK, WEATHER, {"type": "function", "function": {}}]}, "tools[2].function.name"),
    ({"tools": [{"type": "function", "function": {"name": 7}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "x" * 65}}]}, "tools[0].function.name"),
    ({"tools": [CLOCK, CLOCK]}, "tools[1].function.name"),
    ({"tools": _tool(description=3)}, "tools[0].function.description"),
    ({"tools": _tool(strict="yes")}, "tools[0].function.strict"),
    ({"tools": _tool(examples=[])}, "tools[0].function.examples"),
    ({"tools": _tool(parameters=[])}, "tools[0].function.parameters"),
    ({"tools": _tool(parameters={"type": "string"})}, "tools[0].function.parameters.type"),
    ({"tools": _tool(parameters={"type": 5})}, "tools[0].function.parameters.type"),
    ({"tools": _tool(parameters={"properties": []})}, "tools[0].function.parameters.properties"),
    ({"tools": _tool(parameters={"properties": {"a": 1}})}, "tools[0].function.parameters.properties.a"),
    ({"tools": _tool(parameters={"properties": {"a": {"type": [1]}}})},
     "tools[0].function.parameters.properties.a.type"),
    ({"tools": _tool(parameters={"required": "a"})}, "tools[0].function.parameters.required"),
    ({"tools": _tool(parameters={"type": "object", "properties": {"l": {"type": "array", "items": {"type": 1}}}})},
     "tools[0].function.parameters.properties.l.items.type"),
    ({"tools": _tool(parameters=_nested(500))}, "tools[0].function.parameters" + ".items" * 65),
    # tool_choice
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
    ({"tools": [CLOCK], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [CLOCK], "tool_choice": {"function": {"name": "clock"}}}, "tool_choice.type"),
    ({"tools": [CLOCK], "tool_choice": {"type": "tool", "function": {"name": "clock"}}}, "tool_choice.type"),
    ({"tools": [CLOCK], "tool_choice": {"type": "function"}}, "tool_choice.function"),
    ({"tools": [CLOCK], "tool_choice": {"type": "function", "function": {}}}, "tool_choice.function.name"),
    ({"tools": [CLOCK], "tool_choice": {"type": "function", "function": {"name": "other"}}},
     "tool_choice.function.name"),
    ({"tools": [CLOCK], "tool_choice": {"type": "function", "function": {"name": "clock"}, "x": 1}},
     "tool_choice.x"),
    ({"tools": [CLOCK], "parallel_tool_calls": "no"}, "parallel_tool_calls"),
    # functions / function_call
    ({"functions": [{"description": "d"}]}, "functions[0].name"),
    ({"functions": [{"name": "f"}, {"name": "f"}]}, "functions[1].name"),
    ({"functions": [{"name": "f", "strict": True}]}, "functions[0].strict"),
    ({"functions": [{"name": "f", "parameters": 1}]}, "functions[0].parameters"),
    ({"functions": ["f"]}, "functions[0]"),
    ({"functions": [{"name": "f"}], "function_call": {"name": "g"}}, "function_call.name"),
    ({"functions": [{"name": "f"}], "function_call": {"name": "f", "arguments": "{}"}}, "function_call.arguments"),
    ({"function_call": {"name": "f"}}, "function_call"),
    ({"function_call": "required"}, "function_call"),
    ({"tools": [CLOCK], "functions": [{"name": "f"}]}, "functions"),
    ({"tools": [CLOCK], "function_call": "auto"}, "function_call"),
    ({"functions": [{"name": "f"}], "tool_choice": "auto"}, "tool_choice"),
    # response_format
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {}}, "response_format.type"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": ["json_object"]}}, "response_format.type"),
    ({"response_format": {"type": "json_object", "schema": {}}}, "response_format.schema"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": []}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "response_format.json_schema.name"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
     "response_format.json_schema.name"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": "{}"}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": 1}}},
     "response_format.json_schema.strict"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "description": 1}}},
     "response_format.json_schema.description"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "format": 1}}},
     "response_format.json_schema.format"),
]


@pytest.mark.parametrize("fields,field", MALFORMED)
def test_malformed_tool_fields_are_bad_requests_naming_the_exact_field(fields, field):
    error = failure({"model": "kimi", "messages": USER, **fields})
    assert error.field == field and error.code == "invalid_value"
    # The message names the field too: in full, or (for an unknown key) the key after its parent's path.
    assert f"'{field}'" in error.message or field.rsplit(".", 1)[-1] in error.message


def _call(**function):
    return {"id": "c1", "type": "function", "function": {"name": "clock", "arguments": "{}", **function}}


MALFORMED_HISTORY = [
    ({"role": "assistant", "tool_calls": "c1"}, "messages[1].tool_calls"),
    ({"role": "assistant", "tool_calls": [5]}, "messages[1].tool_calls[0]"),
    ({"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
     "messages[1].tool_calls[0].id"),
    ({"role": "assistant", "tool_calls": [{**_call(), "type": "tool"}]}, "messages[1].tool_calls[0].type"),
    ({"role": "assistant", "tool_calls": [{**_call(), "extra": 1}]}, "messages[1].tool_calls[0].extra"),
    ({"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]}, "messages[1].tool_calls[0].function"),
    ({"role": "assistant", "tool_calls": [_call(name=None)]}, "messages[1].tool_calls[0].function.name"),
    ({"role": "assistant", "tool_calls": [_call(arguments=None)]}, "messages[1].tool_calls[0].function.arguments"),
    ({"role": "assistant", "tool_calls": [_call(arguments={})]}, "messages[1].tool_calls[0].function.arguments"),
    ({"role": "assistant", "tool_calls": [_call(arguments="[1]")]}, "messages[1].tool_calls[0].function.arguments"),
    ({"role": "assistant", "tool_calls": [_call(arguments="{oops")]},
     "messages[1].tool_calls[0].function.arguments"),
    ({"role": "assistant", "function_call": "clock"}, "messages[1].function_call"),
    ({"role": "assistant", "function_call": {"name": "clock", "arguments": "1"}},
     "messages[1].function_call.arguments"),
    ({"role": "user", "content": "x", "tool_calls": [_call()]}, "messages[1].tool_calls"),
    ({"role": "tool", "content": "42"}, "messages[1].tool_call_id"),
    ({"role": "tool", "tool_call_id": 1, "content": "42"}, "messages[1].tool_call_id"),
    ({"role": "tool", "tool_call_id": "c1"}, "messages[1].content"),
    ({"role": "tool", "tool_call_id": "c1", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]},
     "messages[1].content[0].type"),
    ({"role": "function", "content": "42"}, "messages[1].name"),
    ({"role": "user", "content": "x", "name": 5}, "messages[1].name"),
]


@pytest.mark.parametrize("message,field", MALFORMED_HISTORY)
def test_malformed_tool_calls_and_results_in_the_history_name_the_field(message, field):
    assert failure({"model": "kimi", "messages": USER + [message]}).field == field


@pytest.mark.parametrize("fields,field,message", [
    ({"frobnicate": 1}, "frobnicate", "Unrecognized request argument supplied: frobnicate"),
    ({"temperature": 3}, "temperature", "'temperature' is out of range: got 3, expected a number from 0 to 2."),
    ({"temperature": "hot"}, "temperature", "Invalid type for 'temperature': expected a number from 0 to 2."),
    ({"stream": "yes"}, "stream", "Invalid type for 'stream': expected true or false."),
    ({"max_tokens": 0}, "max_tokens", "'max_tokens' is out of range: got 0, expected an integer from 1 up."),
    ({"stop": [1]}, "stop", "Invalid type for 'stop': expected a string or a list of up to 4 strings."),
    ({"n": 2}, "n", "n > 1 is not supported: Kimi returns one answer per request. Send n=1 (or leave it out)."),
    ({"stream_options": {"include_usage": 1}}, "stream_options.include_usage",
     "Invalid type for 'stream_options.include_usage': expected true or false."),
    ({"stream_options": {"x": True}}, "stream_options.x", "Unrecognized argument in stream_options: x"),
    ({"tools": {}}, "tools", "Invalid type for 'tools': expected a list."),
    ({"tool_choice": 1}, "tool_choice",
     "Invalid type for 'tool_choice': expected 'none', 'auto', 'required' or an object."),
    ({"model": 5}, "model", "Invalid type for 'model': expected a non-empty string."),
    ({"model": None}, "model", "Missing required parameter: 'model'."),
    ({"messages": []}, "messages", "'messages' must contain at least one message."),
    ({"messages": "hi"}, "messages", "Invalid type for 'messages': expected a list of message objects."),
    ({"messages": None}, "messages", "Missing required parameter: 'messages'."),
    ({"messages": [1]}, "messages[0]", "Invalid type for 'messages[0]': expected an object."),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role",
     "Invalid value for 'messages[0].role': expected one of system, developer, user, assistant, tool, function."),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "Missing required parameter: 'messages[0].content'."),
    ({"messages": [{"role": "user", "content": "x", "mood": 1}]}, "messages[0].mood",
     "Unrecognized argument in messages[0]: mood"),
    ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content[0].type",
     "Invalid value for 'messages[0].content[0].type': expected 'text', 'image_url' or 'file'."),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "messages[0].content[0].type",
     "Content parts of type 'input_audio' are not supported by Kimi's web chat."),
    ({"messages": [{"role": "assistant", "content": [{"type": "image_url", "image_url": "data:x"}]}]},
     "messages[0].content[0].type", "Only user messages can carry images and files ('messages[0].content[0]')."),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}]}]},
     "messages[0].content[0].image_url.url",
     "Invalid value for 'messages[0].content[0].image_url.url': expected an http(s) URL or a data: URL."),
    ({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc"}}]}]},
     "messages[0].content[0].file.file_id",
     "Files uploaded to OpenAI's Files API cannot be used here; send 'file_data' (base64) instead."),
    ({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_data": " "}}]}]},
     "messages[0].content[0].file.file_data",
     "Invalid type for 'messages[0].content[0].file.file_data': expected base64 or a data: URL."),
    ({"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": None}]}, "messages",
     "Every message is empty: send some text."),
])
def test_the_old_schema_checks_keep_their_messages_and_fields(fields, field, message):
    error = failure({"model": "kimi", "messages": USER, **fields})
    assert (error.field, error.message) == (field, message)
    assert error.code == "invalid_value"


JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(
    ["", "f", "auto", "required", "{}", "x y", "function", "json_schema", "text", "tool"]),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["type", "function", "name", "parameters", "json_schema", "schema",
                                         "properties", "required", "arguments", "id", "strict"]), inner, max_size=4),
                    max_leaves=12)
TOOL_FIELDS = ("tools", "tool_choice", "functions", "function_call", "parallel_tool_calls", "response_format")


MESSAGE = st.dictionaries(st.sampled_from(["role", "content", "tool_calls", "tool_call_id", "function_call", "name"]),
                          JSON | st.sampled_from(["assistant", "tool", "function", "user"]), max_size=5)


def _canonical_or_bad_request(body: dict) -> None:
    try:
        parsed = parse_chat_request(body)
    except Failure as error:
        assert error.kind == BAD_REQUEST and error.field
    else:
        assert parsed.request.messages and all(isinstance(m, Message) for m in parsed.request.messages)


# One field at a time, and the history apart: a field refused first would hide the checks of the others.
@pytest.mark.parametrize("name", TOOL_FIELDS)
@settings(max_examples=200, deadline=None)
@given(value=JSON)
def test_any_tool_field_is_a_canonical_request_or_a_bad_request_never_a_crash(name, value):
    _canonical_or_bad_request({"model": "kimi", "messages": USER, name: value})


@settings(max_examples=300, deadline=None)
@given(st.lists(MESSAGE, min_size=1, max_size=3))
def test_any_history_is_a_canonical_request_or_a_bad_request_never_a_crash(messages):
    _canonical_or_bad_request({"model": "kimi", "messages": USER + messages})
