"""The multi-process server: one port, several processes, the shared config, the streaming tests."""

from __future__ import annotations

import asyncio
import signal

import openai
import pytest
import requests

from tests.helpers import Stack, wait_until


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("multi"), server={"processes": 2})
    yield stack
    stack.close()


def test_requests_are_served_by_several_processes(multi):
    pids = set()

    def seen() -> bool:
        pids.add(requests.get(multi.url + "/v1/status", headers=multi.headers(), timeout=10).json()["pid"])
        return len(pids) >= 2
    wait_until(seen, 30, "answers from two processes")


def test_streaming_through_every_process(multi):
    async def run():
        client = openai.AsyncOpenAI(base_url=multi.url + "/v1", api_key=Stack.API_KEY, max_retries=0)

        async def one(i: int) -> tuple[str, str, dict]:
            stream = await client.chat.completions.create(
                model="kimi", messages=[{"role": "user", "content": f"p{i}"}], stream=True,
                stream_options={"include_usage": True})
            chunks = [c async for c in stream]
            return f"p{i}", "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks[-1].usage
        results = await asyncio.gather(*(one(i) for i in range(40)))
        await client.close()
        return results
    for prompt, text, usage in asyncio.run(run()):
        assert text == f"收到 🌙 turn 1: {prompt}" and usage.total_tokens > 0
    wait_until(lambda: multi.emulator.stats()["live_chats"] == 0, 30, "every chat to be deleted")


def test_a_client_disconnect_closes_upstream_in_any_process(multi):
    multi.emulator.admin("stream", {"stall_after": 1, "stall_seconds": 60})
    try:
        before = multi.emulator.stats()["streams_closed_by_client"]
        for _ in range(4):
            response = requests.post(multi.url + "/v1/chat/completions", stream=True, timeout=30,
                                     headers=multi.headers(), json={"model": "kimi", "stream": True,
                                                                    "messages": [{"role": "user", "content": "x"}]})
            lines = response.iter_lines()
            wait_until(lambda: b"content" in next(lines), 10, "the first content chunk")
            response.close()
        wait_until(lambda: multi.emulator.stats()["streams_closed_by_client"] == before + 4, 10, "upstream closes")
    finally:
        multi.emulator.admin("stream", {"stall_after": None})


def test_sigterm_stops_every_process(tmp_path):
    stack = Stack(tmp_path, server={"processes": 3})
    try:
        assert stack.post({"model": "kimi", "messages": [{"role": "user", "content": "x"}]}).status_code == 200
        stack.server.send_signal(signal.SIGTERM)
        assert stack.server.wait(30) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(stack.url + "/health", timeout=2)
    finally:
        stack.close()
