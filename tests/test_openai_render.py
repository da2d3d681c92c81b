"""The OpenAI chat-completions renderer and error envelope: golden outputs, and equality with today's rendering."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import pytest

from server.core import errors as kinds
from server.core.errors import Failure
from server.core.events import (Collected, Failed, Finish, ReasoningDelta, Source, TextDelta, ToolCallDelta,
                                ToolCallEnd, ToolCallStart, Usage)
from server.dialects.openai_chat.errors import TABLE, envelope
from server.dialects.openai_chat.render import StreamRenderer, completion_body, usage_body
from server.edge.sse import KEEPALIVE

GOLDEN = Path(__file__).parent / "golden" / "openai_chat"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"   # rewrite the fixtures from the renderer (then review the diff)
MODEL, ID, NOW = "kimi-k2", "chatcmpl-golden", 1767225600

SOURCES = [Source("Kimi [K2] notes", "https://kimi.com/a", "kimi.com"), Source("", "https://b.example/x"),
           Source("No link", "", "archive")]
WEATHER = {"city": "Paris", "unit": "C"}
TIME = {"zone": "Europe/Paris"}

# Each case: the batches of a streamed answer (an empty batch is upstream silence), and the same answer collected.
CASES = {
    "text": ([[TextDelta("Hello")], [], [TextDelta(", world.")], [Finish("stop")]],
             Collected([TextDelta("Hello, world.")], finish=Finish("stop"))),
    "thinking_text": ([[ReasoningDelta("Six times seven.")], [ReasoningDelta(" Easy.")], [TextDelta("42")],
                       [Finish("stop")]],
                      Collected([TextDelta("42")], reasoning="Six times seven. Easy.", finish=Finish("stop"))),
    "sources_text": ([[SOURCES[0], SOURCES[1]], [SOURCES[2]], [TextDelta("Kimi is a model [1].")],
                      [TextDelta(" More.")], [Finish("length")]],
                     Collected([*SOURCES, TextDelta("Kimi is a model [1]. More.")], finish=Finish("length"))),
    "one_call": ([[ToolCallStart(0, "call_a1", "get_weather")], [ToolCallDelta(0, '{"city": "Paris", ')],
                  [ToolCallDelta(0, '"unit": "C"}'), ToolCallEnd(0, "call_a1", "get_weather", WEATHER)],
                  [Finish("tool_calls")]],
                 Collected(calls=[ToolCallEnd(0, "call_a1", "get_weather", WEATHER)], finish=Finish("tool_calls"))),
    "two_calls": ([[ToolCallStart(0, "call_a1", "get_weather"), ToolCallDelta(0, '{"city": "Paris", "unit": "C"}'),
                    ToolCallEnd(0, "call_a1", "get_weather", WEATHER)],
                   [ToolCallStart(1, "call_b2", "get_time"), ToolCallDelta(1, '{"zone": '),
                    ToolCallDelta(1, '"Europe/Paris"}'), ToolCallEnd(1, "call_b2", "get_time", TIME)],
                   [Finish("tool_calls")]],
                  Collected(calls=[ToolCallEnd(0, "call_a1", "get_weather", WEATHER),
                                   ToolCallEnd(1, "call_b2", "get_time", TIME)], finish=Finish("tool_calls"))),
    "text_then_call": ([[TextDelta("Let me check.")], [ToolCallStart(0, "call_a1", "get_weather")],
                        [ToolCallDelta(0, '{"city": "Paris", "unit": "C"}'),
                         ToolCallEnd(0, "call_a1", "get_weather", WEATHER), Finish("tool_calls")]],
                       Collected([TextDelta("Let me check.")],
                                 calls=[ToolCallEnd(0, "call_a1", "get_weather", WEATHER)], finish=Finish("tool_calls"))),
}
LEGACY = "one_call"   # the legacy `functions` shape of the one-call answer


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    """Every `created` is NOW, in the renderer and in today's code alike."""
    monkeypatch.setattr(time, "time", lambda: float(NOW))


def stream(batches: list, include_usage: bool = False, usage: Usage | None = None, legacy: bool = False) -> bytes:
    """The whole SSE body a writer sends: the head, each batch (a keepalive for an empty one), the tail."""
    renderer = StreamRenderer(MODEL, include_usage, ID, legacy_functions=legacy)
    out = renderer.head()
    for events in batches:
        out += renderer.batch(events) or KEEPALIVE
    return out + renderer.tail(usage)


def golden(name: str, actual: bytes) -> None:
    """Compare with tests/golden/openai_chat/<name> byte for byte (or rewrite it when UPDATE_GOLDEN=1)."""
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(actual)
    assert actual == path.read_bytes()


def whole_bytes(body: dict) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n"


# --- golden outputs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_stream_golden(name):
    golden(f"{name}.sse", stream(CASES[name][0]))


@pytest.mark.parametrize("name", sorted(CASES))
def test_whole_golden(name):
    golden(f"{name}.json", whole_bytes(completion_body(MODEL, CASES[name][1], Usage(20, 7), ID)))


def test_legacy_function_call_golden():
    golden("legacy_function_call.sse", stream(CASES[LEGACY][0], legacy=True))
    golden("legacy_function_call.json",
           whole_bytes(completion_body(MODEL, CASES[LEGACY][1], Usage(20, 7), ID, legacy_functions=True)))


def test_usage_chunk_golden():
    golden("usage.sse", stream(CASES["thinking_text"][0], include_usage=True, usage=Usage(20, 9, 5)))


def test_error_frame_golden():
    renderer = StreamRenderer(MODEL, False, ID)
    failure = Failure(kinds.UPSTREAM_FAILED, "Kimi upstream error: Kimi stopped the answer with an error (x)")
    out = renderer.head() + renderer.batch([TextDelta("Hi"), Failed(failure)])
    golden("error_frame.sse", out)
    assert out.endswith(renderer.error(failure)) and b"[DONE]" not in out


# --- the calls, read as a client would --------------------------------------------------------------------


def frames(body: bytes) -> list[dict]:
    return [orjson.loads(line[6:]) for line in body.split(b"\n\n") if line.startswith(b"data: {")]


@pytest.mark.parametrize("name", ["one_call", "two_calls", "text_then_call"])
def test_stream_calls_assemble_to_the_whole_answer(name):
    """Concatenating the deltas as the openai SDK does gives the whole body's content and calls."""
    batches, collected = CASES[name]
    content, calls, reasons = "", {}, []
    for chunk in frames(stream(batches)):
        choice = chunk["choices"][0]
        content += choice["delta"].get("content") or ""
        for part in choice["delta"].get("tool_calls", []):
            call = calls.setdefault(part["index"], {"id": None, "name": None, "arguments": ""})
            call["id"] = part.get("id", call["id"])
            call["name"] = part.get("function", {}).get("name", call["name"])
            call["arguments"] += part["function"]["arguments"]
        reasons.append(choice["finish_reason"])
    message = completion_body(MODEL, collected, Usage(1, 1), ID)["choices"][0]["message"]
    assert content == (message["content"] or "")
    assert [(c["id"], c["name"], orjson.loads(c["arguments"])) for c in calls.values()] == [
        (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in message["tool_calls"]]
    assert reasons[-1] == "tool_calls" and all(r is None for r in reasons[:-1])


def test_whole_content_is_null_only_with_calls_and_no_text():
    only_calls = completion_body(MODEL, CASES["one_call"][1], Usage(1, 1), ID)["choices"][0]["message"]
    assert only_calls["content"] is None
    nothing = completion_body(MODEL, Collected(finish=Finish("stop")), Usage(1, 1), ID)["choices"][0]["message"]
    assert nothing["content"] == "" and "tool_calls" not in nothing


def test_legacy_keeps_the_first_call_only():
    batches, collected = CASES["two_calls"]
    chunks = frames(stream(batches, legacy=True))
    calls = [c["choices"][0]["delta"]["function_call"] for c in chunks if "function_call" in c["choices"][0]["delta"]]
    assert calls == [{"name": "get_weather", "arguments": ""}, {"arguments": '{"city": "Paris", "unit": "C"}'}]
    message = completion_body(MODEL, collected, Usage(1, 1), ID, legacy_functions=True)["choices"][0]["message"]
    assert message["function_call"] == {"name": "get_weather", "arguments": '{"city":"Paris","unit":"C"}'}


def test_tail_takes_the_finish_usage_and_needs_one():
    renderer = StreamRenderer(MODEL, True, ID)
    renderer.batch([Finish("stop", Usage(3, 4))])
    assert frames(renderer.tail(None))[0]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    with pytest.raises(ValueError, match="include_usage"):
        StreamRenderer(MODEL, True, ID).tail(None)
    assert StreamRenderer(MODEL, False, ID).tail(None) == b"data: [DONE]\n\n"


def test_usage_body_is_openais_shape():
    assert usage_body(Usage(3, 5, 2)) == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8,
                                          "completion_tokens_details": {"reasoning_tokens": 2}}
    assert usage_body(Usage(3, 5)) == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


# --- the error table: each kind as the server answered before failures were neutral ----------------------------
# errors.json was frozen from the ApiError envelopes the server built before this change, one case per fault.

ERROR_CASES = orjson.loads((GOLDEN / "errors.json").read_bytes())


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda c: f"{c['failure']['kind']}-{c['status']}")
def test_envelope_is_the_frozen_error(case):
    failure = Failure(**case["failure"])
    assert envelope(failure) == (case["status"], case["headers"], case["body"])


def test_upstream_faults_render_as_the_frozen_errors():
    from server.core.conversation_lock import busy
    from server.upstream import errors as up
    frozen = {(c["status"], c["body"]["error"]["code"]): c for c in ERROR_CASES}
    for failure in (up.UpstreamChatGone("gone").to_failure(), up.UpstreamThrottled("slow down", 30).to_failure(),
                    up.UpstreamPaywall("paywall").to_failure(), up.UpstreamError("boom").to_failure(),
                    up.UpstreamAuthRejected("401").to_failure(), up.UpstreamTimeout("60 s").to_failure(),
                    up.UpstreamOverloaded("busy").to_failure(), busy("chat:abc", 30.0)):
        status, headers, body = envelope(failure)
        case = frozen[(status, body["error"]["code"])]
        assert (status, headers, body) == (case["status"], case["headers"], case["body"])


def test_every_kind_has_a_row_and_a_case():
    assert set(TABLE) == set(kinds.KINDS)
    assert {c["failure"]["kind"] for c in ERROR_CASES} == set(kinds.KINDS)


def test_too_large_keeps_413_for_a_status_it_does_not_own():
    assert envelope(Failure(kinds.TOO_LARGE, "big", status=500))[0] == 413


def test_a_whole_answer_shows_sources_where_the_stream_shows_them():
    """A source that arrives mid-answer (a second search) sits in the whole content where the stream put it."""
    import asyncio

    from server.core.collect import collect
    events = [TextDelta("First part."), Source("Later", "https://example.com/later", "example.com"),
              TextDelta(" Second part."), Finish("stop", Usage(1, 2))]

    async def batches():
        yield events
    whole = asyncio.run(collect(batches()))
    chunks = [orjson.loads(f[6:]) for f in stream([events]).split(b"\n\n") if f.startswith(b"data: {")]
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c.get("choices"))
    body = completion_body(MODEL, whole, Usage(1, 2), ID)
    assert body["choices"][0]["message"]["content"] == streamed
    assert streamed == "First part.Sources:\n1. [Later](https://example.com/later) (example.com)\n\n Second part."
