"""Kimi's features through model names: search, thinking, research, math, agents, length continuation."""

from __future__ import annotations

import openai
import orjson
import pytest

from tests.helpers import Stack

PROMPT = "what is new"
K1 = "crm40ee9e5jvhsn7ptcg"
AGENT = "coo6l3pkqq4ri39f36bg"
ANSWER = f"收到 🌙 turn 1: {PROMPT}"
SOURCES = ("Sources:\n1. [Result 1 for what is new](https://example.com/r1) (example.com)\n"
           "2. [Result 2 for what is new](https://example.com/r2) (example.com)\n\n")


def _client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=Stack.API_KEY, max_retries=0)


def _both(stack, model: str, **extra) -> tuple[dict, str, str, str]:
    """(upstream completion body, non-stream content, streamed content, streamed reasoning)."""
    client = _client(stack)
    whole = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}], **extra)
    sent = stack.emulator.received("completion")[-1]["body"]
    content, reasoning = [], []
    for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPT}],
                                                stream=True, **extra):
        if chunk.choices:
            delta = chunk.choices[0].delta
            assert not (delta.content and getattr(delta, "reasoning_content", None)), "mixed chunk"
            content.append(delta.content or "")
            reasoning.append(getattr(delta, "reasoning_content", None) or "")
    message = whole.choices[0].message
    assert "".join(content) == message.content
    assert "".join(reasoning) == (getattr(message, "reasoning_content", None) or "")
    return sent, message.content, "".join(content), "".join(reasoning)


@pytest.mark.parametrize("model,fields,rendered", [
    ("kimi", {"use_search": False, "kimiplus_id": "kimi"}, ANSWER),
    ("moonshot-v1", {"use_search": False, "kimiplus_id": "kimi"}, ANSWER),
    ("k2", {"use_search": False, "kimiplus_id": "kimi"}, ANSWER),
    ("kimi-search", {"use_search": True, "kimiplus_id": "kimi"}, SOURCES + ANSWER),
    ("kimi-silent", {"use_search": True}, ANSWER),
    ("kimi-search-silent", {"use_search": True}, ANSWER),
    ("kimi-math", {"use_math": True, "use_search": False}, ANSWER),
    ("kimi-research", {"use_research": True}, ANSWER),
    ("kimi-k1", {"kimiplus_id": K1, "use_search": False}, ANSWER),
    ("kimi-thinking", {"kimiplus_id": K1}, ANSWER),
    ("k1.5", {"kimiplus_id": K1}, ANSWER),
    ("kimi-k1-search", {"kimiplus_id": K1, "use_search": True}, SOURCES + ANSWER),
    (AGENT, {"kimiplus_id": AGENT, "use_search": False}, ANSWER),
])
def test_model_flags_send_the_right_fields_and_render_the_right_output(stack, model, fields, rendered):
    sent, whole, streamed, reasoning = _both(stack, model)
    for key, value in fields.items():
        assert sent.get(key, False) == value, (key, sent)
    assert whole == rendered and streamed == rendered
    created = stack.emulator.received("chat_create")[-1]["body"]
    assert created["kimiplus_id"] == (AGENT if model == AGENT else "kimi")
    if sent.get("kimiplus_id") == K1:
        assert reasoning == f"Thinking about 「{PROMPT}」 step by step."
    else:
        assert reasoning == ""


def test_use_search_in_the_body_works_too(stack):
    sent, whole, _, _ = _both(stack, "kimi", extra_body={"use_search": True})
    assert sent["use_search"] is True and whole == SOURCES + ANSWER


def test_models_lists_the_canonical_names(stack):
    ids = [m.id for m in _client(stack).models.list()]
    assert {"kimi", "kimi-search", "kimi-research", "kimi-k1", "kimi-thinking", "kimi-math", "kimi-silent"} <= set(ids)


@pytest.mark.parametrize("bad", ["kimi-fast", "kimi-search-search", "gpt-4", "coo6l3pkqq4ri39f36bgX",
                                 "xcoo6l3pkqq4ri39f36bg", "kimi--search"])
def test_unknown_model_names_and_unanchored_agent_ids_are_404(stack, bad):
    response = stack.post({"model": bad, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_research_checks_the_usage_first_and_refuses_when_used_up(stack):
    stack.emulator.admin("settings", {"research_total": 3, "research_used": 2})
    assert stack.post({"model": "kimi-research", "messages": [{"role": "user", "content": "x"}]}).status_code == 200
    assert stack.emulator.stats()["requests"]["research_usage"] == 1
    response = stack.post({"model": "kimi-research", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 429 and response.json()["error"]["code"] == "research_quota_exhausted"
    assert stack.emulator.stats()["research"]["used"] == 3


def test_a_capped_answer_is_continued_to_completion_in_both_modes(stack):
    stack.emulator.admin("stream", {"length_cap": 6})
    sent, whole, streamed, _ = _both(stack, "kimi")
    assert whole == ANSWER and streamed == ANSWER
    continues = [r["body"] for r in stack.emulator.received("completion") if r["body"].get("action") == "continue"]
    assert continues and all(c["segment_id"] and c["messages"] == [{"role": "user", "content": " "}]
                             for c in continues)
    chunks = [orjson.loads(f[6:]) for f in stack.post({"model": "kimi", "stream": True, "messages": [
        {"role": "user", "content": PROMPT}]}).content.split(b"\n\n") if f.startswith(b"data: {")]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"


def test_finish_reason_is_length_only_when_the_continuation_bound_is_hit(tmp_path):
    stack = Stack(tmp_path, server={"max_continuations": 2})
    try:
        stack.emulator.admin("stream", {"length_cap": 3})
        result = _client(stack).chat.completions.create(model="kimi", messages=[{"role": "user", "content": PROMPT}])
        assert result.choices[0].finish_reason == "length"
        assert result.choices[0].message.content == ANSWER[:9]   # three segments of three characters
    finally:
        stack.close()
