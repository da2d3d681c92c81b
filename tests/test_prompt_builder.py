"""The prompt builder: today's history folding, tool calls and results as text, the tools and format sections."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.request import (ChatRequest, Message, ResponseFormat, TextPart, Tool, ToolCallPart, ToolChoice,
                                 ToolResultPart)
from server.emulation.prompt import build_prompt, call_markup, format_instruction, slim_schema, tools_section

WEATHER = Tool("get_weather", "Get the current weather in a city.",
               {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
CLOCK = Tool("get_time", "", {"type": "object", "properties": {}})


def msg(role: str, *parts: object, name: str | None = None) -> Message:
    """A message whose str parts become text parts."""
    return Message(role, tuple(TextPart(p) if isinstance(p, str) else p for p in parts), name)


def req(*messages: Message, **options: object) -> ChatRequest:
    return ChatRequest(model="kimi", messages=list(messages), **options)


def call(call_id: str, name: str = "get_weather", **arguments: object) -> ToolCallPart:
    return ToolCallPart(call_id, name, arguments)


# Today's folding, unchanged for requests without tools or a response format.

def test_a_single_user_message_is_sent_as_is():
    assert build_prompt(req(msg("user", "  Hi,\nthere  ")), False) == "  Hi,\nthere  "


def test_multi_turn_history_is_labelled_and_blank_line_separated():
    prompt = build_prompt(req(msg("system", "Be brief."), msg("user", "part one", "two"), msg("assistant", "Sure."),
                              msg("user", "next")), False)
    assert prompt == "System: Be brief.\n\nUser: part one\ntwo\n\nAssistant: Sure.\n\nUser: next"


def test_names_go_in_the_label():
    prompt = build_prompt(req(msg("user", "hi", name="ann"), msg("assistant", "hello", name="bot")), False)
    assert prompt == "User (ann): hi\n\nAssistant (bot): hello"


def test_empty_turns_are_skipped():
    prompt = build_prompt(req(msg("system", "  "), msg("user", "q"), msg("assistant"), msg("user", "\n")), False)
    assert prompt == "User: q"


def test_a_lone_system_message_is_labelled():
    assert build_prompt(req(msg("system", "rules")), False) == "System: rules"


# Continuing: only what follows Kimi's last answer.

def test_continuing_sends_only_the_messages_after_the_last_assistant_message():
    history = [msg("system", "s"), msg("user", "first"), msg("assistant", "one"), msg("user", "second"),
               msg("assistant", "two"), msg("system", "note"), msg("user", "third")]
    assert build_prompt(req(*history), True) == "System: note\n\nUser: third"


def test_continuing_with_a_lone_user_message_sends_its_text_as_is():
    history = [msg("user", "first"), msg("assistant", "one"), msg("user", " second ")]
    assert build_prompt(req(*history), True) == " second "


def test_continuing_without_an_assistant_message_sends_the_newest_user_text():
    history = [msg("system", "s"), msg("user", "older"), msg("user", "newest"), msg("user", " ")]
    assert build_prompt(req(*history), True) == "newest"


def test_continuing_sends_the_tool_results_after_the_call():
    history = [msg("user", "weather in Paris and Rome?"),
               msg("assistant", call("call_1", city="Paris"), call("call_2", city="Rome")),
               msg("tool", ToolResultPart("call_1", None, '{"temp": 21}')),
               msg("tool", ToolResultPart("call_2", None, '{"temp": 25}'))]
    assert build_prompt(req(*history), True) == ('Tool result (get_weather, call_1): {"temp": 21}\n\n'
                                                 'Tool result (get_weather, call_2): {"temp": 25}')


# Tool calls and tool results in the history.

def test_assistant_tool_calls_are_shown_as_the_markup_after_the_text():
    history = [msg("user", "Paris?"), msg("assistant", "Let me check.", call("call_abc", city="Paris")),
               msg("assistant", call("c2", "get_time"))]
    assert build_prompt(req(*history), False) == (
        'User: Paris?\n\n'
        'Assistant: Let me check.\n<tool_call>{"name":"get_weather","arguments":{"city":"Paris"}}</tool_call>\n\n'
        'Assistant: <tool_call>{"name":"get_time","arguments":{}}</tool_call>')


def test_parallel_calls_are_one_block_each():
    text = build_prompt(req(msg("user", "q"), msg("assistant", call("a", city="X"), call("b", city="Y"))), False)
    assert text.endswith('Assistant: <tool_call>{"name":"get_weather","arguments":{"city":"X"}}</tool_call>\n'
                         '<tool_call>{"name":"get_weather","arguments":{"city":"Y"}}</tool_call>')


def test_tool_results_name_the_call_and_say_when_they_are_errors():
    history = [msg("user", "q"), msg("assistant", call("call_abc")),
               msg("tool", ToolResultPart("call_abc", "get_weather", "no such city", is_error=True)),
               msg("tool", ToolResultPart("call_x", None, "orphan")),
               msg("tool", ToolResultPart("call_y", None, "legacy"), name="lookup")]
    assert build_prompt(req(*history), False).split("\n\n")[2:] == [
        "Tool result (get_weather, call_abc): [error] no such city", "Tool result (call_x): orphan",
        "Tool result (lookup, call_y): legacy"]


def test_several_results_in_one_message_each_get_a_block_before_its_text():
    results = msg("user", ToolResultPart("a", "f", "1"), ToolResultPart("b", "g", "2"), "and now?")
    assert build_prompt(req(results), False) == "Tool result (f, a): 1\n\nTool result (g, b): 2\n\nUser: and now?"


def test_unicode_is_kept_verbatim():
    history = [msg("user", "Météo à 東京 ?"), msg("assistant", call("c", city="東京")),
               msg("tool", ToolResultPart("c", None, "晴れ ☀"))]
    prompt = build_prompt(req(*history, tools=[WEATHER]), False)
    assert '{"city":"東京"}' in prompt and "User: Météo à 東京 ?" in prompt and "(get_weather, c): 晴れ ☀" in prompt


# The tools section.

def test_tools_section_comes_first_and_lists_each_tool_compactly():
    prompt = build_prompt(req(msg("user", "Paris?"), tools=[WEATHER, CLOCK]), False)
    section, question = prompt.split("\n\n")
    assert question == "Paris?"
    assert "- get_weather: Get the current weather in a city.\n  Parameters (JSON schema): " \
           '{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}' in section
    assert '- get_time\n  Parameters (JSON schema): {"type":"object","properties":{}}' in section
    assert '<tool_call>{"name": "...", "arguments": {...}}</tool_call>' in section
    assert '"Tool result (name, id): ..."' in section and "Write nothing after the blocks" in section
    assert "not your own tools (web search, code sandbox)" in section and "never invent their results" in section


@pytest.mark.parametrize(("choice", "wanted", "unwanted"), [
    (ToolChoice("auto"), "otherwise answer normally", "You must"),
    (ToolChoice("required"), "You must answer with at least one function call.", "answer normally"),
    (ToolChoice("named", "get_time"), "You must call the function get_time", "answer normally"),
])
def test_tool_choice_is_spelled_out(choice, wanted, unwanted):
    section = tools_section(req(msg("user", "q"), tools=[WEATHER, CLOCK], tool_choice=choice))
    assert wanted in section and unwanted not in section


@pytest.mark.parametrize(("parallel", "wanted"), [(True, "write the blocks one after another"),
                                                  (False, "at most one call per answer")])
def test_parallel_tool_calls_sets_how_many_blocks(parallel, wanted):
    assert wanted in tools_section(req(msg("user", "q"), tools=[WEATHER], parallel_tool_calls=parallel))


def test_tool_choice_none_sends_no_tools_section():
    request = req(msg("user", "q"), msg("assistant", call("c")), msg("tool", ToolResultPart("c", None, "r")),
                  tools=[WEATHER], tool_choice=ToolChoice("none"))
    assert build_prompt(request, True) == "Tool result (get_weather, c): r"


def test_continuing_turns_repeat_the_tools_section():
    history = [msg("user", "q"), msg("assistant", call("c")), msg("tool", ToolResultPart("c", None, "r"))]
    prompt = build_prompt(req(*history, tools=[WEATHER]), True)
    assert prompt == tools_section(req(*history, tools=[WEATHER])) + "\n\nTool result (get_weather, c): r"


def test_schema_loses_titles_and_closed_objects_but_not_properties_named_title():
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Book", "type": "object",
              "additionalProperties": False,
              "properties": {"title": {"title": "Title", "type": "string"},
                             "tags": {"type": "array", "items": {"title": "Tag", "enum": ["title"]}},
                             "extra": {"type": "object", "additionalProperties": {"title": "V", "type": "integer"}},
                             "kind": {"anyOf": [{"title": "A", "const": "a"}, {"type": "null"}]}},
              "$defs": {"title": {"title": "T", "type": "string", "default": {"title": "kept"}}},
              "required": ["title"]}
    assert slim_schema(schema) == {
        "type": "object",
        "properties": {"title": {"type": "string"}, "tags": {"type": "array", "items": {"enum": ["title"]}},
                       "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
                       "kind": {"anyOf": [{"const": "a"}, {"type": "null"}]}},
        "$defs": {"title": {"type": "string", "default": {"title": "kept"}}}, "required": ["title"]}


# The response-format section.

def test_json_object_asks_for_one_bare_object_at_the_end():
    prompt = build_prompt(req(msg("user", "list three colours"), response_format=ResponseFormat("json_object")), False)
    assert prompt == ("list three colours\n\nAnswer with exactly one JSON object. "
                      "Nothing else: no prose before or after it, no Markdown code fences.")


def test_json_schema_gives_the_schema_compactly_with_its_name():
    fmt = ResponseFormat("json_schema", {"type": "object", "properties": {"név": {"type": "string"}},
                                         "additionalProperties": False}, "person", True)
    text = format_instruction(fmt)
    assert 'JSON schema "person": {"type":"object","properties":{"név":{"type":"string"}},' \
           '"additionalProperties":false}' in text
    assert "exactly one JSON value" in text and "no Markdown code fences" in text


def test_format_section_is_repeated_on_continuing_turns_after_the_tools_section_and_the_tail():
    history = [msg("user", "q"), msg("assistant", "a"), msg("user", "again")]
    request = req(*history, tools=[WEATHER], response_format=ResponseFormat("json_object"))
    tools, tail, instruction = build_prompt(request, True).split("\n\n")
    assert tools == tools_section(request) and tail == "again"
    assert instruction.startswith("Answer with exactly one JSON object.") and "function call" in instruction


def test_text_format_has_no_instruction():
    with pytest.raises(ValueError, match="response_format.kind"):
        format_instruction(ResponseFormat("text"))


TEXT = st.text(st.characters(blacklist_categories=("Cs",)))   # what a JSON parser can hand over: no lone surrogates
VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                      | TEXT, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                      max_leaves=10)


@given(name=TEXT.filter(bool), arguments=st.dictionaries(TEXT, VALUES, max_size=4))
def test_call_markup_holds_the_call_as_compact_json(name, arguments):
    markup = call_markup(name, arguments)
    assert markup.startswith("<tool_call>") and markup.endswith("</tool_call>") and "\n" not in markup
    assert json.loads(markup[len("<tool_call>"):-len("</tool_call>")]) == {"name": name, "arguments": arguments}


def test_integers_beyond_64_bits_still_render():
    assert call_markup("f", {"n": 2**70}) == f'<tool_call>{{"name":"f","arguments":{{"n":{2**70}}}}}</tool_call>'
