"""Tool calls with every model flag: thinking, search, and REST's length continuation (issue 15 §2)."""

from __future__ import annotations

import json

import openai
import pytest

from tests.helpers import Stack
from tests.sdk_bridge import stack_per_protocol

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
USER = [{"role": "user", "content": "Weather in Paris?"}]


flag_stack = stack_per_protocol("flags", "flag_stack")


def _ask(stack: Stack, model: str, answer: str, chunks="chars"):
    """The whole answer and the streamed one, for the same scripted answer."""
    stack.emulator.script(answers=[answer, answer], chunks=chunks, reset=True)
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key=Stack.API_KEY, max_retries=0)
    whole = client.chat.completions.create(model=model, messages=USER, tools=[WEATHER]).choices[0]
    content, reasoning, calls, finish = "", "", {}, None
    for chunk in client.chat.completions.create(model=model, messages=USER, tools=[WEATHER], stream=True):
        delta = chunk.choices[0].delta
        content += delta.content or ""
        reasoning += getattr(delta, "reasoning_content", None) or ""
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"name": call.function.name, "arguments": ""})
            entry["arguments"] += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    streamed = (content, reasoning, [(c["name"], json.loads(c["arguments"])) for c in calls.values()], finish)
    return whole, streamed


def _calls(choice) -> list:
    return [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or []]


def test_a_thinking_model_keeps_its_reasoning_beside_the_call(flag_stack):
    whole, (content, reasoning, calls, finish) = _ask(flag_stack, "kimi-thinking", "Checking.\n" + CALL)
    assert whole.finish_reason == finish == "tool_calls"
    assert _calls(whole) == calls == [("get_weather", {"city": "Paris"})]
    assert whole.message.content.strip() == content.strip() == "Checking."
    thought = getattr(whole.message, "reasoning_content", None)
    assert thought and thought == reasoning and "<tool_call" not in thought


def test_a_searching_model_keeps_its_sources_beside_the_call(flag_stack):
    whole, (content, _, calls, finish) = _ask(flag_stack, "kimi-search", CALL)
    assert whole.finish_reason == finish == "tool_calls"
    assert _calls(whole) == calls == [("get_weather", {"city": "Paris"})]
    assert whole.message.content.startswith("Sources:\n1. [") and content.startswith("Sources:\n1. [")
    assert "<tool_call" not in whole.message.content + content


@pytest.mark.parametrize("flag_stack", ["rest"], indirect=True)   # Connect answers have no length cap
def test_a_call_cut_by_kimis_length_cap_is_whole_after_the_continuation(flag_stack):
    flag_stack.emulator.admin("stream", {"length_cap": 20})
    try:
        whole, (content, _, calls, finish) = _ask(flag_stack, "kimi", "One moment. " + CALL)
        continued = [r for r in flag_stack.emulator.received("completion") if r["body"].get("action") == "continue"]
        assert len(continued) >= 2 * (len("One moment. " + CALL) // 20)   # both requests went through the cap
    finally:
        flag_stack.emulator.admin("stream", {"length_cap": None})
    assert whole.finish_reason == finish == "tool_calls"
    assert _calls(whole) == calls == [("get_weather", {"city": "Paris"})]
    assert whole.message.content.strip() == content.strip() == "One moment."


def test_a_held_structured_answer_keeps_the_stream_alive(tmp_path):
    """While Kimi writes an answer that is checked whole before it is sent, keepalives still go out."""
    stack = Stack(tmp_path, protocol="rest", server={"keepalive_seconds": 0.2})
    try:
        answer = '{"city": "Paris", "temperature": 21}'
        stack.emulator.script(answers=[answer], chunks="chars")
        # Each character is a delayed event: the answer takes at least 20 keepalive intervals to arrive.
        stack.emulator.admin("stream", {"event_delay": 0.15})
        body = {"model": "kimi", "messages": USER, "stream": True, "response_format": {"type": "json_object"}}
        raw = stack.post(body).content
        frames = [f for f in raw.split(b"\n\n") if f]
        first_text = next(i for i, f in enumerate(frames) if b'"content":"{' in f)
        assert b": keepalive" in frames[:first_text]
        assert json.loads(frames[first_text][6:])["choices"][0]["delta"]["content"] == answer
        assert frames[-1] == b"data: [DONE]"
    finally:
        stack.close()


@pytest.mark.parametrize("flag_stack", ["rest"], indirect=True)   # the byte-splitting switch is REST's
def test_a_call_split_inside_utf8_and_data_lines_is_still_one_call(flag_stack):
    """Kimi's bytes cut anywhere (inside UTF-8 sequences and `data:` lines) still make the same call."""
    flag_stack.emulator.admin("stream", {"split_writes": True})
    try:
        answer = 'Je vérifie 🌦 ' + '<tool_call>{"name": "get_weather", "arguments": {"city": "巴黎"}}</tool_call>'
        whole, (content, _, calls, finish) = _ask(flag_stack, "kimi", answer)
    finally:
        flag_stack.emulator.admin("stream", {"split_writes": False})
    assert whole.finish_reason == finish == "tool_calls"
    assert _calls(whole) == calls == [("get_weather", {"city": "巴黎"})]
    assert whole.message.content.strip() == content.strip() == "Je vérifie 🌦"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_json_re_ask_with_tools_offered_answers_the_repaired_json(flag_stack, stream):
    """The re-ask reads a fresh answer: tools offered beside a response_format do not break it."""
    flag_stack.emulator.script(answers=["not json at all", '{"a": 1}'], chunks=3, reset=True)
    body = {"model": "kimi", "messages": USER, "tools": [WEATHER], "response_format": {"type": "json_object"},
            "stream": stream}
    response = flag_stack.post(body)
    assert response.status_code == 200, response.text
    if stream:
        frames = [json.loads(f[6:]) for f in response.content.split(b"\n\n") if f.startswith(b"data: {")]
        assert not any("error" in f for f in frames) and response.content.endswith(b"data: [DONE]\n\n")
        content = "".join(f["choices"][0]["delta"].get("content") or "" for f in frames if f["choices"])
    else:
        content = response.json()["choices"][0]["message"]["content"]
    assert json.loads(content) == {"a": 1}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_json_answer_from_a_searching_model_is_the_bare_json(flag_stack, stream):
    """Search sources are Markdown in OpenAI's dialect: a JSON answer leaves them out, or it would not parse."""
    flag_stack.emulator.script(answers=['{"city": "Paris"}'], reset=True)
    body = {"model": "kimi-search", "messages": USER, "response_format": {"type": "json_object"}, "stream": stream}
    response = flag_stack.post(body)
    if stream:
        frames = [json.loads(f[6:]) for f in response.content.split(b"\n\n") if f.startswith(b"data: {")]
        content = "".join(f["choices"][0]["delta"].get("content") or "" for f in frames if f["choices"])
    else:
        content = response.json()["choices"][0]["message"]["content"]
    assert json.loads(content) == {"city": "Paris"}


def test_a_named_tool_choice_takes_only_that_tool(flag_stack):
    """With tool_choice naming get_time, a block calling get_weather is not a call (OpenAI never returns one)."""
    clock = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    flag_stack.emulator.script(answers=[CALL], reset=True)
    client = openai.OpenAI(base_url=flag_stack.url + "/v1", api_key=Stack.API_KEY, max_retries=0)
    choice = client.chat.completions.create(model="kimi", messages=USER, tools=[WEATHER, clock],
                                            tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert choice.choices[0].message.tool_calls is None and choice.choices[0].finish_reason == "stop"
    assert choice.choices[0].message.content == CALL   # visible, never dropped


def test_text_before_a_call_streams_before_it_when_json_was_asked_for_too(flag_stack):
    """A call instead of the JSON answer: the text Kimi wrote before the call is not held back past it."""
    flag_stack.emulator.script(answers=["One moment. " + CALL], chunks="chars", reset=True)
    body = {"model": "kimi", "messages": USER, "tools": [WEATHER], "response_format": {"type": "json_object"},
            "stream": True}
    frames = [json.loads(f[6:]) for f in flag_stack.post(body).content.split(b"\n\n") if f.startswith(b"data: {")]
    deltas = [f["choices"][0]["delta"] for f in frames if f["choices"]]
    first_call = next(i for i, d in enumerate(deltas) if d.get("tool_calls"))
    assert "".join(d.get("content") or "" for d in deltas[:first_call]).strip() == "One moment."
    assert not any(d.get("content") for d in deltas[first_call:])
    assert frames[-1]["choices"][0]["finish_reason"] == "tool_calls"
