"""Tool calling end to end (issue 15 §2): the official openai SDK, through the server, over REST and Connect.

Kimi's answers are scripted in the emulator; the server must turn `<tool_call>` blocks in them into OpenAI tool
calls and put the tools, the choice and the results into the prompt Kimi receives.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import openai
import pytest

from tests.helpers import Stack
from tests.sdk_bridge import SdkBridge, bridge_fixture, stack_per_protocol

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                   "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Get the local time in an IANA time zone",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}
TOOLS = [WEATHER, TIME]
QUESTION = "What is the weather in Paris?"
USER = [{"role": "user", "content": QUESTION}]
PARIS = {"city": "巴黎 Paris", "unit": "c"}
TOKYO = {"tz": "Asia/Tokyo"}


def block(name: str, arguments: dict) -> str:
    """One call in the markup the prompt teaches Kimi."""
    return "<tool_call>" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + "</tool_call>"


ONE_CALL = block("get_weather", PARIS)
TWO_CALLS = block("get_weather", PARIS) + "\n" + block("get_time", TOKYO)


sdk_stack = stack_per_protocol("tools")


class Bridge(SdkBridge):
    """The SDK clients on a stack, and what Kimi received since the test began."""

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.stack.url + "/v1", api_key=Stack.API_KEY, max_retries=0, timeout=60)

    def prompt(self) -> str:
        """The one prompt Kimi received during this test."""
        turns = self.turns()
        assert len(turns) == 1, turns
        return turns[0]["text"]

    def create(self, answer: str | list[str], chunks: int | str = 1, **kwargs):
        """Script Kimi's answer(s), then ask with the tools (unless given) and return the SDK's completion."""
        self.emulator.script(answers=[answer] if isinstance(answer, str) else answer, chunks=chunks)
        return self.client.chat.completions.create(model="kimi", **{"messages": USER, "tools": TOOLS, **kwargs})


bridge = bridge_fixture(Bridge)


def calls_of(message) -> list[tuple[str, dict]]:
    """(name, arguments) of a message's tool calls, arguments decoded from their JSON string."""
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]


def assemble(chunks) -> tuple[str, list[dict], str | None]:
    """A stream's content, tool calls and finish reason, assembled by hand as OpenAI documents the deltas."""
    content, calls, finish = "", {}, None
    for chunk in chunks:
        if not chunk.choices:
            continue   # the usage chunk
        choice = chunk.choices[0]
        assert "<tool_call" not in (choice.delta.content or "")
        content += choice.delta.content or ""
        for delta in choice.delta.tool_calls or []:
            if delta.index not in calls:
                # id, type and name come once, in the first delta of each call: the SDK concatenates repeats.
                assert delta.id.startswith("call_") and delta.type == "function" and delta.function.name
                calls[delta.index] = {"id": delta.id, "name": delta.function.name,
                                      "arguments": delta.function.arguments or ""}
            else:
                assert delta.id is None and (delta.function is None or delta.function.name is None)
                calls[delta.index]["arguments"] += (delta.function.arguments or "") if delta.function else ""
        finish = choice.finish_reason or finish
    assert "<tool_call" not in content and "</tool_call" not in content
    assert sorted(calls) == list(range(len(calls)))
    return content, [calls[i] for i in sorted(calls)], finish


def decoded(calls: list[dict]) -> list[tuple[str, dict]]:
    return [(c["name"], json.loads(c["arguments"])) for c in calls]


def test_a_single_call_non_stream(bridge):
    result = bridge.create(ONE_CALL)
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]
    assert len(choice.message.tool_calls) == 1 and call.id.startswith("call_") and call.type == "function"
    assert isinstance(call.function.arguments, str) and calls_of(choice.message) == [("get_weather", PARIS)]


def test_a_streamed_call_assembles_to_the_same_call_with_the_sdk_helper_and_by_hand(bridge):
    whole = calls_of(bridge.create(ONE_CALL).choices[0].message)
    bridge.emulator.script(answers=[ONE_CALL], chunks="chars")
    with bridge.client.chat.completions.stream(model="kimi", messages=USER, tools=TOOLS) as stream:
        contents = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    assert not any("<tool_call" in c for c in contents) and "<tool_call" not in "".join(contents)
    assert final.choices[0].finish_reason == "tool_calls" and calls_of(final.choices[0].message) == whole
    assert final.choices[0].message.tool_calls[0].id.startswith("call_")
    content, calls, finish = assemble(bridge.create(ONE_CALL, chunks="chars", stream=True))
    assert content == "" and finish == "tool_calls" and decoded(calls) == whole


def test_two_parallel_calls_in_both_modes(bridge):
    message = bridge.create(TWO_CALLS).choices[0].message
    assert calls_of(message) == [("get_weather", PARIS), ("get_time", TOKYO)]
    ids = [c.id for c in message.tool_calls]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)
    content, calls, finish = assemble(bridge.create(TWO_CALLS, chunks="chars", stream=True))
    assert decoded(calls) == calls_of(message) and finish == "tool_calls" and not content.strip()
    assert len({c["id"] for c in calls}) == 2


def test_a_call_preceded_by_text_keeps_the_text_as_content(bridge):
    answer = "Let me check.\n" + ONE_CALL
    choice = bridge.create(answer).choices[0]
    assert choice.message.content.strip() == "Let me check."
    assert calls_of(choice.message) == [("get_weather", PARIS)] and choice.finish_reason == "tool_calls"
    content, calls, finish = assemble(bridge.create(answer, chunks="chars", stream=True))
    assert content.strip() == "Let me check." and decoded(calls) == [("get_weather", PARIS)]
    assert finish == "tool_calls"


def test_a_plain_answer_with_tools_offered_is_a_plain_answer(bridge):
    choice = bridge.create("It is sunny in Paris.").choices[0]
    assert choice.message.content == "It is sunny in Paris." and choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    content, calls, finish = assemble(bridge.create("It is sunny in Paris.", chunks=3, stream=True))
    assert (content, calls, finish) == ("It is sunny in Paris.", [], "stop")


def test_tool_choice_none_parses_nothing_and_sends_no_tools(bridge):
    choice = bridge.create(ONE_CALL, tool_choice="none").choices[0]
    assert choice.message.content == ONE_CALL and choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    prompt = bridge.prompt()
    assert QUESTION in prompt and "get_weather" not in prompt and "get_time" not in prompt


def test_tool_choice_required_and_named_make_a_call_mandatory_in_the_prompt(bridge):
    auto = bridge.create(ONE_CALL)
    auto_prompt = bridge.turns()[-1]["text"]
    required = bridge.create(ONE_CALL, tool_choice="required").choices[0]
    required_prompt = bridge.turns()[-1]["text"]
    named = bridge.create(block("get_time", TOKYO),
                          tool_choice={"type": "function", "function": {"name": "get_time"}}).choices[0]
    named_prompt = bridge.turns()[-1]["text"]
    assert calls_of(auto.choices[0].message) == calls_of(required.message) == [("get_weather", PARIS)]
    assert calls_of(named.message) == [("get_time", TOKYO)] and named.finish_reason == "tool_calls"
    for prompt in (required_prompt, named_prompt):
        assert prompt != auto_prompt and "must" in prompt.lower()
    assert "get_weather" in required_prompt and "get_time" in named_prompt


def test_parallel_tool_calls_false_keeps_the_first_call_only(bridge):
    message = bridge.create(TWO_CALLS, parallel_tool_calls=False).choices[0].message
    assert calls_of(message) == [("get_weather", PARIS)]
    _, calls, _ = assemble(bridge.create(TWO_CALLS, chunks="chars", stream=True, parallel_tool_calls=False))
    assert decoded(calls) == [("get_weather", PARIS)]


def test_legacy_functions_are_answered_with_function_call(bridge):
    bridge.emulator.script(answers=[ONE_CALL])
    result = bridge.client.chat.completions.create(model="kimi", messages=USER, functions=[WEATHER["function"]],
                                                   function_call="auto")
    choice = result.choices[0]
    assert choice.message.function_call.name == "get_weather"
    assert json.loads(choice.message.function_call.arguments) == PARIS
    assert choice.message.tool_calls is None and choice.finish_reason == "function_call"


def test_the_async_client_gets_one_call_stream_and_not(bridge):
    async def run():
        client = bridge.async_client()
        try:
            bridge.emulator.script(answers=[ONE_CALL, ONE_CALL], chunks="chars")
            whole = await client.chat.completions.create(model="kimi", messages=USER, tools=TOOLS)
            stream = await client.chat.completions.create(model="kimi", messages=USER, tools=TOOLS, stream=True)
            return whole, [chunk async for chunk in stream]
        finally:
            await client.close()
    whole, chunks = asyncio.run(run())
    assert calls_of(whole.choices[0].message) == [("get_weather", PARIS)]
    assert whole.choices[0].finish_reason == "tool_calls"
    content, calls, finish = assemble(chunks)
    assert decoded(calls) == [("get_weather", PARIS)] and finish == "tool_calls" and content == ""


def test_tool_definitions_reach_kimi(bridge):
    bridge.create("Sure.")
    prompt = bridge.prompt()
    for text in ("get_weather", "Get the current weather for a city", "city", "get_time", "tz", "<tool_call>",
                 QUESTION):
        assert text in prompt, text


def _result_messages(call_id: str, call) -> list[dict]:
    """The assistant's call and the tool's result, as an agent sends them back."""
    return [{"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function",
                 "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call_id, "content": "21 °C and sunny"}]


def test_an_agent_loop_in_a_folded_history(bridge):
    call = bridge.create(ONE_CALL).choices[0].message.tool_calls[0]
    final = bridge.create("It is 21 °C and sunny in Paris.", messages=USER + _result_messages(call.id, call))
    choice = final.choices[0]
    assert choice.message.content == "It is 21 °C and sunny in Paris." and choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    first, second = bridge.turns()
    assert QUESTION in second["text"] and "get_weather" in second["text"]
    assert "Tool result" in second["text"] and call.id in second["text"] and "21 °C and sunny" in second["text"]
    assert bridge.chats_created() == 2   # a folded history goes to a chat of its own
    if second["protocol"] == "rest":
        assert second["chat_id"] != first["chat_id"]
    else:
        assert second["chat_id"] == ""   # no chat id: Kimi makes a new chat


def test_an_agent_loop_in_one_conversation_sends_only_the_tool_result(bridge):
    path = f"/v1/chat/completions/agent-{uuid.uuid4().hex[:12]}"
    bridge.emulator.script(answers=[ONE_CALL, "It is 21 °C and sunny in Paris."])
    first = bridge.stack.post({"model": "kimi", "messages": USER, "tools": TOOLS}, path=path)
    assert first.status_code == 200, first.text
    message = first.json()["choices"][0]["message"]
    assert first.json()["choices"][0]["finish_reason"] == "tool_calls"
    call = message["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == PARIS
    history = USER + [{"role": "assistant", "content": None, "tool_calls": [call]},
                      {"role": "tool", "tool_call_id": call["id"], "content": "21 °C and sunny"}]
    second = bridge.stack.post({"model": "kimi", "messages": history, "tools": TOOLS}, path=path)
    assert second.status_code == 200, second.text
    assert second.json()["choices"][0]["message"]["content"] == "It is 21 °C and sunny in Paris."
    turn1, turn2 = bridge.turns()
    assert QUESTION in turn1["text"]
    assert "21 °C and sunny" in turn2["text"] and call["id"] in turn2["text"]
    assert QUESTION not in turn2["text"]   # Kimi already has it: only what came after its last answer
    assert bridge.chats_created() == 1 and turn2["chat_id"]
    assert turn1["chat_id"] in ("", turn2["chat_id"])   # "" is Connect's first turn, which makes the chat


@pytest.mark.parametrize("extra,param", [
    ({"tools": [WEATHER, TIME, {"type": "function", "function": {"description": "no name"}}]},
     "tools[2].function.name"),
    ({"tools": [{"type": "retrieval", "function": WEATHER["function"]}]}, "tools[0].type"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_stock_price"}}},
     "tool_choice.function.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}},
     "response_format.json_schema.name"),
    ({"response_format": {"type": "yaml"}}, "response_format.type")])
def test_malformed_tools_choice_and_format_are_400s_naming_the_field(bridge, extra, param):
    response = bridge.stack.post({"model": "kimi", "messages": USER, **extra})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert error["type"] == "invalid_request_error" and error["message"] and error["code"]
    assert bridge.turns() == []   # refused before Kimi was asked
