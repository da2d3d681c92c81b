"""The OpenAI chat-completions renderer and error envelope: golden outputs, and equality with today's rendering."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from server.core import errors as kinds
from server.core.errors import Failure, bad_request
from server.core.events import (Collected, Failed, Finish, ReasoningDelta, Source, TextDelta, ToolCallDelta,
                                ToolCallEnd, ToolCallStart, Usage)
from server.dialects.openai_chat.errors import TABLE, envelope
from server.dialects.openai_chat.render import KEEPALIVE, StreamRenderer, completion_body, usage_body

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
             Collected(text="Hello, world.", finish=Finish("stop"))),
    "thinking_text": ([[ReasoningDelta("Six times seven.")], [ReasoningDelta(" Easy.")], [TextDelta("42")],
                       [Finish("stop")]],
                      Collected(text="42", reasoning="Six times seven. Easy.", finish=Finish("stop"))),
    "sources_text": ([[SOURCES[0], SOURCES[1]], [SOURCES[2]], [TextDelta("Kimi is a model [1].")],
                      [TextDelta(" More.")], [Finish("length")]],
                     Collected(text="Kimi is a model [1]. More.", sources=SOURCES, finish=Finish("length"))),
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
                       Collected(text="Let me check.", calls=[ToolCallEnd(0, "call_a1", "get_weather", WEATHER)],
                                 finish=Finish("tool_calls"))),
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


# --- equal to today's rendering (server/openai_format.py, server/turn.py, server/usage.py) ---------------


def todays_stream(batches: list, include_usage: bool = False, usage: dict | None = None) -> bytes:
    """What chat_handler._stream writes today for the pieces the protocols make of these events."""
    openai_format = pytest.importorskip("server.openai_format")
    from server.turn import SourceLines

    chunks, lines = openai_format.ChunkFactory(MODEL, include_usage, ID), SourceLines()
    out = chunks.role()
    for events in batches:
        if not events:
            out += openai_format.KEEPALIVE
        for event in events:
            if isinstance(event, TextDelta):
                if gap := lines.separator():
                    out += chunks.delta({"content": gap})
                out += chunks.delta({"content": event.text})
            elif isinstance(event, ReasoningDelta):
                out += chunks.delta({"reasoning_content": event.text})
            elif isinstance(event, Source):
                out += chunks.delta({"content": lines.line(event.title, event.url, event.site)})
            elif isinstance(event, Finish):
                out += chunks.delta({}, finish_reason=event.reason)
    if include_usage:
        out += chunks.usage(usage)
    return out + openai_format.DONE


TEXT_ONLY = ["text", "thinking_text", "sources_text"]


@pytest.mark.parametrize("name", TEXT_ONLY)
@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_is_todays_bytes(name, include_usage):
    batches = CASES[name][0]
    usage = Usage(20, 9, 5)
    assert stream(batches, include_usage, usage) == todays_stream(batches, include_usage, usage_body(usage))


@pytest.mark.parametrize("name", TEXT_ONLY)
def test_whole_is_todays_bytes(name):
    openai_format = pytest.importorskip("server.openai_format")
    from server.turn import SourceLines

    batches, collected = CASES[name]
    lines, content = SourceLines(), ""
    for event in (e for events in batches for e in events):
        if isinstance(event, Source):
            content += lines.line(event.title, event.url, event.site)
        elif isinstance(event, TextDelta):
            content += lines.separator() + event.text
    usage = Usage(20, 7)
    today = openai_format.completion_body(MODEL, content, collected.reasoning, collected.finish.reason,
                                          usage_body(usage), ID)
    assert orjson.dumps(completion_body(MODEL, collected, usage, ID)) == orjson.dumps(today)


def test_error_frame_is_todays_bytes():
    openai_format = pytest.importorskip("server.openai_format")
    from server.errors import UpstreamStreamError

    today = UpstreamStreamError("Kimi's stream ended without all_done").to_api_error()
    failure = Failure(kinds.UPSTREAM_FAILED, today.message)
    assert StreamRenderer(MODEL, False, ID).error(failure) == openai_format.error_frame(today.body())


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])   # the frozen clock is constant
@given(prompt=st.text(), text=st.text(), reasoning=st.text())
def test_usage_body_is_todays_shape(prompt, text, reasoning):
    from server.usage import estimate_tokens, usage

    thought = estimate_tokens(reasoning)
    ours = Usage(estimate_tokens(prompt), estimate_tokens(text) + thought, thought)
    assert orjson.dumps(usage_body(ours)) == orjson.dumps(usage(prompt, text, reasoning))


# --- the error table: each kind against an error the server raises today -------------------------------------


def todays_errors() -> list[tuple[Failure, object]]:
    """(the neutral failure, today's ApiError for the same fault), at least one per kind."""
    from server import errors as old
    from server.conversation_lock import _unavailable, busy
    from server.models import resolve_model

    try:
        resolve_model("no-such-model")
    except old.ApiError as exc:
        missing_model = exc
    conflict = busy("chat:abc", 30.0)
    lock_broken = _unavailable("/x/locks", OSError(5, "I/O error"))
    return [
        (bad_request("'messages[0].role' must be one of ...", "messages[0].role"),
         old.invalid("'messages[0].role' must be one of ...", "messages[0].role")),
        (bad_request("Bad body.", None), old.invalid("Bad body.", None)),
        (bad_request("The request body must be a JSON object.", None, code="invalid_json"),
         old.ApiError(400, "The request body must be a JSON object.", code="invalid_json")),
        (Failure(kinds.AUTH, "Incorrect API key provided."),
         old.ApiError(401, "Incorrect API key provided.", code="invalid_api_key")),
        (Failure(kinds.NOT_FOUND, missing_model.message, code="model_not_found", field="model"), missing_model),
        (Failure(kinds.NOT_FOUND, old.UpstreamChatGone("gone").to_api_error().message, code="conversation_not_found",
                 field="conversation_id"), old.UpstreamChatGone("gone").to_api_error()),
        (Failure(kinds.NOT_FOUND, "Unknown path /v2."), old.ApiError(404, "Unknown path /v2.", code="not_found")),
        (Failure(kinds.METHOD_NOT_ALLOWED, "DELETE needs a conversation id."),
         old.ApiError(405, "DELETE needs a conversation id.", code="method_not_allowed")),
        (Failure(kinds.CONFLICT, conflict.message, retry_after=5), conflict),
        (Failure(kinds.TOO_LARGE, "Request body too large.", status=413),
         old.ApiError(413, "Request body too large.", code="request_too_large")),
        (Failure(kinds.TOO_LARGE, "Request URI too long.", code="uri_too_long", status=414),
         old.ApiError(414, "Request URI too long.", code="uri_too_long")),
        (Failure(kinds.TOO_LARGE, "Request headers too large.", code="request_header_fields_too_large", status=431),
         old.ApiError(431, "Request headers too large.", code="request_header_fields_too_large")),
        (Failure(kinds.RATE_LIMITED, old.UpstreamThrottled("slow down", 30).to_api_error().message, retry_after=30),
         old.UpstreamThrottled("slow down", 30).to_api_error()),
        (Failure(kinds.RATE_LIMITED, "Quota used up.", code="research_quota_exhausted", retry_after=3600),
         old.ApiError(429, "Quota used up.", type="rate_limit_exceeded", code="research_quota_exhausted",
                      headers={"Retry-After": "3600"})),
        (Failure(kinds.QUOTA, old.UpstreamPaywall("paywall").to_api_error().message),
         old.UpstreamPaywall("paywall").to_api_error()),
        (Failure(kinds.UPSTREAM_FAILED, old.UpstreamError("boom").to_api_error().message),
         old.UpstreamError("boom").to_api_error()),
        (Failure(kinds.UPSTREAM_FAILED, old.UpstreamAuthRejected("401").to_api_error().message,
                 code="upstream_auth_failed"), old.UpstreamAuthRejected("401").to_api_error()),
        (Failure(kinds.TIMEOUT, old.UpstreamTimeout("60 s").to_api_error().message),
         old.UpstreamTimeout("60 s").to_api_error()),
        (Failure(kinds.OVERLOADED, old.UpstreamOverloaded("busy").to_api_error().message, retry_after=10),
         old.UpstreamOverloaded("busy").to_api_error()),
        (Failure(kinds.UNAVAILABLE, "No Kimi account is usable right now.", retry_after=30),
         old.ApiError(503, "No Kimi account is usable right now.", type="server_error", code="no_available_account",
                      headers={"Retry-After": "30"})),
        (Failure(kinds.UNAVAILABLE, lock_broken.message, code="conversations_unavailable"), lock_broken),
        (Failure(kinds.INTERNAL, "Internal server error."),
         old.ApiError(500, "Internal server error.", type="server_error", code="internal_error")),
    ]


@pytest.mark.parametrize("case", range(len(todays_errors())))
def test_envelope_is_todays_error(case):
    failure, today = todays_errors()[case]
    assert envelope(failure) == (today.status, today.headers, today.body())


def test_every_kind_has_a_row_and_a_case():
    assert set(TABLE) == set(kinds.KINDS)
    assert {failure.kind for failure, _ in todays_errors()} == set(kinds.KINDS)


def test_too_large_keeps_413_for_a_status_it_does_not_own():
    assert envelope(Failure(kinds.TOO_LARGE, "big", status=500))[0] == 413
