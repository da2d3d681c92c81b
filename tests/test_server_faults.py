"""One test per emulator fault switch, through the server, plus disconnects and concurrency."""

from __future__ import annotations

import asyncio

import openai
import orjson
import pytest
import requests

from tests.helpers import Stack, wait_until

USER = [{"role": "user", "content": "tell me"}]
CHAT = {"rest": "completion", "connect": "connect_chat"}   # the emulator endpoint that answers a turn


def _frames(response) -> list[bytes]:
    return [f for f in response.content.split(b"\n\n") if f]


def _stream_text(frames: list[bytes]) -> str:
    out = []
    for frame in frames:
        if frame.startswith(b"data: {"):
            chunk = orjson.loads(frame[6:])
            for choice in chunk.get("choices", []):
                out.append(choice["delta"].get("content") or "")
    return "".join(out)


@pytest.fixture(params=["rest", "connect"])
def fast(request, tmp_path):
    """A stack with short timeouts, for stalls, over each protocol."""
    s = Stack(tmp_path, upstream={"idle_timeout": 1.0}, server={"keepalive_seconds": 0.2}, protocol=request.param)
    yield s
    s.close()


def test_upstream_5xx_is_retried_then_reported_as_502(any_stack):
    stack = any_stack
    stack.emulator.fault(CHAT[stack.protocol], status=500)
    if stack.protocol == "rest":
        stack.emulator.fault("chat_create", status=503)
    assert stack.post({"model": "kimi", "messages": USER}).json()["choices"][0]["message"]["content"]
    stack.emulator.fault(CHAT[stack.protocol], status=502, times=3)
    response = stack.post({"model": "kimi", "messages": USER})
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"
    wait_until(lambda: stack.emulator.stats()["live_chats"] == 0, 10, "every chat to be deleted")


def test_upstream_hanging_up_without_an_answer_is_502_never_500(stack):  # REST: it has a create call
    stack.emulator.fault("chat_create", close=True, times=3)
    response = stack.post({"model": "kimi", "messages": USER})
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_error"
    stack.emulator.fault("completion", close=True)
    assert stack.post({"model": "kimi", "messages": USER}).status_code == 200   # retried


@pytest.mark.parametrize("protocol", ["rest", "connect"])
def test_an_expired_access_token_is_renewed_by_the_refresher_and_the_answer_arrives(tmp_path, protocol):
    stack = Stack(tmp_path, refresher=True, protocol=protocol)
    try:
        stack.emulator.admin("expire_access")
        response = stack.post({"model": "kimi", "messages": USER})
        assert response.status_code == 200, response.text
        assert stack.emulator.stats()["refresh_ok"] >= 1
        assert stack.emulator.stats()["refresh_token_reuses"] == 0
    finally:
        stack.close()


def test_a_rejected_account_fails_over_to_another(tmp_path):
    stack = Stack(tmp_path, accounts=2, server={"refresh_wait_seconds": 1})
    try:
        stack.emulator.admin("revoke", {"user_id": stack.accounts[0]["user_id"]})
        for _ in range(4):
            assert stack.post({"model": "kimi", "messages": USER}).status_code == 200
        # Kimi's refusal of our token is not the caller's fault: 502, not 401.
        stack.emulator.admin("revoke", {"user_id": stack.accounts[1]["user_id"]})
        response = stack.post({"model": "kimi", "messages": USER})
        assert response.status_code in (502, 503) and response.json()["error"]["code"] != "invalid_api_key"
    finally:
        stack.close()


def _broken_stream_error(response) -> dict:
    """A stream that broke: either it had started (a final error frame, no [DONE]), or it broke before the
    first byte reached us and the server answered with a plain 502 envelope instead."""
    if response.status_code != 200:
        assert response.headers["Content-Type"].startswith("application/json")
        return response.json()["error"]
    frames = _frames(response)
    assert frames[-1] != b"data: [DONE]" and b"[DONE]" not in response.content
    return orjson.loads(frames[-1][6:])["error"]


def test_a_cut_stream_ends_with_an_error_frame_and_no_done(any_stack):
    stack = any_stack
    # Paced, so the start of the answer reaches the server before the cut.
    stack.emulator.admin("stream", {"cut_after": 2, "event_delay": 0.02})
    response = stack.post({"model": "kimi", "messages": USER, "stream": True})
    error = _broken_stream_error(response)
    assert error["code"] == "upstream_error" and "broke off" in error["message"]
    assert response.status_code == 200, "the answer never started"
    response = stack.post({"model": "kimi", "messages": USER})
    assert response.status_code == 502


def test_a_mid_stream_error_event_becomes_an_error_frame(any_stack):
    stack = any_stack
    stack.emulator.admin("stream", {"error_after": 1, "event_delay": 0.02})
    response = stack.post({"model": "kimi", "messages": USER, "stream": True})
    error = _broken_stream_error(response)
    assert response.status_code == 200 and error["code"] == "upstream_error"
    assert "runtime error" not in response.text   # Kimi's internal detail stays out
    assert stack.post({"model": "kimi", "messages": USER}).status_code == 502


def test_a_stall_past_the_idle_timeout_is_504_with_keepalives_meanwhile(fast):
    fast.emulator.admin("stream", {"stall_after": 1, "stall_seconds": 30})
    response = fast.post({"model": "kimi", "messages": USER})
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"
    frames = _frames(fast.post({"model": "kimi", "messages": USER, "stream": True}))
    assert b": keepalive" in frames
    assert orjson.loads(frames[-1][6:])["error"]["code"] == "upstream_timeout"
    wait_until(lambda: fast.emulator.stats()["open_streams"] == 0, 10, "the upstream streams to be closed")


@pytest.mark.parametrize("answer", ["收到 🌙 turn {turn}: {prompt}", "a\ufffdb 🌙\ufffd {prompt} 完"])
def test_bytes_split_inside_utf8_and_lines_give_the_exact_text(any_stack, answer):
    stack = any_stack
    stack.emulator.admin("stream", {"split_writes": True, "chunks": 7, "answer": answer})
    expected = answer.format(turn=1, prompt="tell me")
    assert stack.post({"model": "kimi", "messages": USER}).json()["choices"][0]["message"]["content"] == expected
    assert _stream_text(_frames(stack.post({"model": "kimi", "messages": USER, "stream": True}))) == expected


def test_a_stream_pushing_conflict_is_retried_on_a_new_chat(stack):
    stack.emulator.fault("completion", status=400, body={"error_type": "chat.user_stream_pushing",
                                                         "message": "已有对话流正在输出", "detail": ""})
    assert stack.post({"model": "kimi", "messages": USER}).status_code == 200


def test_a_client_that_disconnects_closes_the_upstream_request(any_stack):
    stack = any_stack
    stack.emulator.admin("stream", {"stall_after": 2, "stall_seconds": 60})
    response = requests.post(stack.url + "/v1/chat/completions", stream=True, timeout=30, headers=stack.headers(),
                             data=orjson.dumps({"model": "kimi", "messages": USER, "stream": True}))
    lines = response.iter_lines()
    wait_until(lambda: b"content" in next(lines), 10, "the first content chunk")
    assert stack.emulator.stats()["open_streams"] == 1
    response.close()
    wait_until(lambda: stack.emulator.stats()["streams_closed_by_client"] == 1, 10, "the upstream to be closed")
    wait_until(lambda: stack.emulator.stats()["live_chats"] == 0, 10, "the chat to be deleted")


def test_a_hundred_concurrent_streams_each_get_their_own_answer(any_stack):
    stack = any_stack
    stack.emulator.admin("stream", {"event_delay": 0.01})

    async def run():
        client = openai.AsyncOpenAI(base_url=stack.url + "/v1", api_key=Stack.API_KEY, max_retries=0, timeout=120)

        async def one(i: int) -> tuple[str, str]:
            prompt = f"request number {i}"
            stream = await client.chat.completions.create(
                model="kimi", messages=[{"role": "user", "content": prompt}], stream=True)
            return prompt, "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        results = await asyncio.gather(*(one(i) for i in range(100)))
        await client.close()
        return results
    for prompt, text in asyncio.run(run()):
        assert text == f"收到 🌙 turn 1: {prompt}"
    assert stack.emulator.stats()["chats_created"] == 100
    wait_until(lambda: stack.emulator.stats()["live_chats"] == 0, 30, "every chat to be deleted")


def test_kimi_throttling_is_429_with_retry_after(stack):
    stack.emulator.fault("completion", status=429, times=3, body={"error_type": "chat.rate_limit", "message": "慢一点"})
    response = stack.post({"model": "kimi", "messages": USER})
    assert response.status_code == 429 and response.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(response.headers["Retry-After"]) >= 1
    for word in ("credit", "balance", "quota"):
        assert word not in response.text.lower()


def test_an_upstream_call_that_times_out_is_504(tmp_path):
    stack = Stack(tmp_path, upstream={"request_timeout": 1}, server={"max_attempts": 2})
    try:
        stack.emulator.fault("chat_create", stall=5, times=2)
        response = stack.post({"model": "kimi", "messages": USER})
        assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"
    finally:
        stack.close()
