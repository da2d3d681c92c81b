"""The official openai SDK against the server, sync and async, stream and not."""

from __future__ import annotations

import asyncio

import openai
import orjson
import requests

from tests.helpers import Stack

PROMPT = "Say something about 月亮 and the sea"
EXPECTED = f"收到 🌙 turn 1: {PROMPT}"


def _client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=Stack.API_KEY, max_retries=0)


def test_sync_non_stream(any_stack):
    stack = any_stack
    result = _client(stack).chat.completions.create(model="kimi", messages=[{"role": "user", "content": PROMPT}])
    assert result.choices[0].message.content == EXPECTED
    assert result.choices[0].finish_reason == "stop" and result.object == "chat.completion"
    assert result.usage.prompt_tokens > 0 and result.usage.completion_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens


def test_sync_stream_with_usage(any_stack):
    stack = any_stack
    chunks = list(_client(stack).chat.completions.create(
        model="moonshot-v1", messages=[{"role": "user", "content": PROMPT}], stream=True,
        stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == EXPECTED
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.model == "moonshot-v1" for c in chunks)


def test_async_stream_and_non_stream(any_stack):
    stack = any_stack
    async def run():
        client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=Stack.API_KEY, max_retries=0)
        whole = await client.chat.completions.create(model="kimi", messages=[{"role": "user", "content": PROMPT}])
        stream = await client.chat.completions.create(model="kimi", messages=[{"role": "user", "content": PROMPT}],
                                                      stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
        return whole.choices[0].message.content, text
    assert asyncio.run(run()) == (EXPECTED, EXPECTED)


def test_stream_frames_obey_every_sse_rule(any_stack):
    stack = any_stack
    response = stack.post({"model": "kimi", "stream": True, "stream_options": {"include_usage": True},
                           "messages": [{"role": "user", "content": PROMPT}]}, stream=True)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache" and response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    raw = response.content
    frames = raw.split(b"\n\n")
    assert frames[-1] == b"" and frames[-2] == b"data: [DONE]"
    chunks = []
    for frame in frames[:-2]:
        assert frame.startswith(b"data: ") and b"\n" not in frame, frame
        chunks.append(orjson.loads(frame[6:]))
    assert len({(c["id"], c["object"], c["created"], c["model"]) for c in chunks}) == 1
    assert chunks[0]["object"] == "chat.completion.chunk"
    roles = [c["choices"][0]["delta"].get("role") for c in chunks if c["choices"]]
    assert roles[0] == "assistant" and not any(roles[1:])
    final = [c for c in chunks if c["choices"]][-1]
    assert final["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_health_models_and_paths_without_v1(stack):
    health = requests.get(stack.url + "/health", timeout=10).json()
    assert health["accounts"] == {"total": 1, "usable": 1} and "token" not in orjson.dumps(health).decode()
    for path in ("/v1/models", "/models"):
        models = requests.get(stack.url + path, headers=stack.headers(), timeout=10).json()
        assert "kimi" in [m["id"] for m in models["data"]]
    assert stack.post({"model": "kimi", "messages": [{"role": "user", "content": "x"}]},
                      path="/chat/completions").status_code == 200
