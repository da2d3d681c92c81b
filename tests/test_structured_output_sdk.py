"""Structured output end to end (issue 15 §3): json_object, json_schema, the re-ask and parse(), REST and Connect.

Kimi's answers are scripted in the emulator; the client must get bare JSON, and a broken answer must be asked for
again once in the same Kimi chat before the client sees anything.
"""

from __future__ import annotations

import json

import openai
import orjson
import pydantic
import pytest
import requests

from tests.sdk_bridge import SdkBridge, bridge_fixture, stack_per_protocol

USER = [{"role": "user", "content": "The weather in Paris, please."}]
WEATHER = {"city": "Paris", "temp": 21}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
          "required": ["city", "temp"], "additionalProperties": False}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True}}
JSON_OBJECT = {"type": "json_object"}
FENCED = 'Sure! Here it is:\n```json\n{"city": "Paris", "temp": 21}\n```\nHope that helps.'
WRONG = '{"city": "Paris", "temp": "warm"}'   # fails the schema; "warm" appears in no schema or prompt


class Weather(pydantic.BaseModel):
    """What parse() should return."""

    city: str
    temp: float


sdk_stack = stack_per_protocol("structured")


class Bridge(SdkBridge):
    """The SDK client on a stack, and what Kimi received since the test began."""

    def content(self, answers: list[str], response_format: dict, stream: bool, chunks: int | str = 1) -> str:
        """Script Kimi's answers, ask with `response_format`, return the content (a stream's deltas joined)."""
        self.emulator.script(answers=answers, chunks=chunks)
        result = self.client.chat.completions.create(model="kimi", messages=USER, response_format=response_format,
                                                     stream=stream)
        if not stream:
            assert result.choices[0].finish_reason == "stop"
            return result.choices[0].message.content
        return "".join(c.choices[0].delta.content or "" for c in result if c.choices)


bridge = bridge_fixture(Bridge)


def _frames(response: requests.Response) -> list[bytes]:
    return [f[6:] for f in response.content.split(b"\n\n") if f.startswith(b"data: ")]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_json_object_bare_answer_comes_back_bare(bridge, stream):
    content = bridge.content([json.dumps(WEATHER)], JSON_OBJECT, stream, chunks="chars")
    assert json.loads(content) == WEATHER
    assert "JSON" in bridge.turns()[0]["text"]   # the prompt asks for JSON


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_json_object_fenced_with_chatter_comes_back_as_bare_json(bridge, stream):
    content = bridge.content([FENCED], JSON_OBJECT, stream, chunks=7)
    assert json.loads(content) == WEATHER   # loads() fails on any fence or chatter left around it
    assert len(bridge.turns()) == 1         # extracting the JSON needs no re-ask


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_json_schema_valid_answer(bridge, stream):
    content = bridge.content([json.dumps(WEATHER)], JSON_SCHEMA, stream, chunks=3)
    assert json.loads(content) == WEATHER
    prompt = bridge.turns()[0]["text"]
    assert '"temp"' in prompt and "number" in prompt   # the schema went with the question


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_an_invalid_answer_is_repaired_by_one_re_ask_in_the_same_chat(bridge, stream):
    content = bridge.content([WRONG, json.dumps(WEATHER)], JSON_SCHEMA, stream)
    assert json.loads(content) == WEATHER
    first, second = bridge.turns()
    assert "warm" in second["text"]   # the re-ask names what was wrong with the first answer
    assert "warm" not in first["text"]
    assert bridge.chats_created() == 1 and second["chat_id"]      # the same Kimi chat ...
    assert first["chat_id"] in ("", second["chat_id"])           # ... ("" is Connect's chat-making first turn)


def test_invalid_twice_is_a_502_saying_why(bridge):
    bridge.emulator.script(answers=[WRONG, WRONG])
    response = bridge.stack.post({"model": "kimi", "messages": USER, "response_format": JSON_SCHEMA})
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_structured_output" and "warm" in error["message"]
    assert len(bridge.turns()) == 2   # one re-ask, no more


def test_invalid_twice_in_a_stream_is_an_error_frame_and_no_done(bridge):
    bridge.emulator.script(answers=["I cannot answer that.", "Still no."], chunks=2)
    response = bridge.stack.post({"model": "kimi", "messages": USER, "response_format": JSON_OBJECT,
                                  "stream": True})
    frames = _frames(response)
    assert frames and frames[-1] != b"[DONE]" and b"[DONE]" not in frames
    error = orjson.loads(frames[-1])["error"]
    assert error["code"] == "invalid_structured_output" and "JSON" in error["message"]
    leaked = [orjson.loads(f) for f in frames[:-1]]
    assert not any(c["choices"][0]["delta"].get("content") for c in leaked if c.get("choices"))
    assert len(bridge.turns()) == 2


def test_the_sdk_invalid_twice_raises_with_the_code(bridge):
    bridge.emulator.script(answers=["not json", "not json"])
    with pytest.raises(openai.APIStatusError) as raised:
        bridge.client.chat.completions.create(model="kimi", messages=USER, response_format=JSON_OBJECT)
    assert raised.value.status_code == 502 and raised.value.code == "invalid_structured_output"


def test_parse_with_a_pydantic_model(bridge):
    bridge.emulator.script(answers=['```json\n{"city": "Paris", "temp": 21.5}\n```'])
    result = bridge.client.chat.completions.parse(model="kimi", messages=USER, response_format=Weather)
    parsed = result.choices[0].message.parsed
    assert isinstance(parsed, Weather) and parsed == Weather(city="Paris", temp=21.5)
    prompt = bridge.turns()[0]["text"]
    assert "Weather" in prompt and '"temp"' in prompt   # parse() sends the model's schema, named after it
