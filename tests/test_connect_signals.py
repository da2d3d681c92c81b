"""The 2026 Chat stream's extras over Connect: sandbox tool frames never shown, search results as sources,
citation markers, the degrade notice, free-user overload, the empty end frame and system messages."""

from __future__ import annotations

import orjson
import pytest
import requests

from common.connect_frames import END_STREAM, FrameParser, encode
from server.upstream.kimi.connect.citations import CitationFilter
from tests.helpers import Stack, wait_until
from tests.kimi_emulator.connect_tools import OVERLOAD_REASON, SYSTEM_TEXT

USER = [{"role": "user", "content": "hello"}]
ANSWER = "收到 🌙 turn 1: hello"
SOURCES = ("Sources:\n1. [Result 1 for hello](https://example.com/r1) (example.com)\n"
           "2. [Result 2 for hello](https://example.com/r2) (example.com)\n\n")
CHAT_URL = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("signals"), protocol="connect", log_level="DEBUG",
              server={"max_attempts": 2, "refresh_wait_seconds": 1})
    yield s
    s.close()


@pytest.fixture(autouse=True)
def clean_switches(stack):
    yield
    stack.emulator.admin("connect", {"citations": None, "degrade": False, "system_message": False,
                                     "empty_end": False, "overloaded_free": False, "end_error": None,
                                     "sandbox_tools": None})
    stack.emulator.admin("stream", {"chunks": 4})


def _events(response: requests.Response) -> list:
    """The SSE data frames of a streamed answer, decoded ([DONE] as the string)."""
    frames = [f[6:] for f in response.content.split(b"\n\n") if f.startswith(b"data: ")]
    return [f.decode() if f == b"[DONE]" else orjson.loads(f) for f in frames]


def _streamed(stack, model: str = "kimi") -> tuple[str, list]:
    response = stack.post({"model": model, "messages": USER, "stream": True})
    assert response.status_code == 200, response.text
    events = _events(response)
    assert events[-1] == "[DONE]", events[-3:]
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e.get("choices")]
    return "".join(d.get("content") or "" for d in deltas), deltas


def _whole(stack, model: str = "kimi") -> dict:
    response = stack.post({"model": model, "messages": USER})
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]


def _raw_frames(stack, body: dict) -> list[tuple[int, dict]]:
    response = requests.post(stack.emulator.url + CHAT_URL, data=encode(body), timeout=10, headers={
        "Authorization": "Bearer " + stack.accounts[0]["access_token"], "Content-Type": "application/connect+json"})
    return FrameParser().feed(response.content)


def test_the_emulator_runs_sandbox_tools_for_a_k2d5_request_that_asks_for_none(stack):
    frames = _raw_frames(stack, {"scenario": "SCENARIO_K2D5", "tools": [], "message": {
        "role": "user", "blocks": [{"text": {"content": "hello"}}]}})
    tools = [m["block"]["tool"] for _, m in frames if isinstance(m.get("block"), dict) and "tool" in m["block"]]
    assert [t["status"] for t in tools if t.get("status")][:2] == ["STATUS_PENDING", "STATUS_RUNNING"]
    assert {t.get("toolCallId") for t in tools} >= {"ipython:1", "web_search:1"}
    assert any("block.tool.args" == m.get("mask") for _, m in frames)


@pytest.mark.parametrize("model", ["kimi", "kimi-thinking"])
def test_sandbox_tool_frames_never_reach_the_answer(stack, model):
    message = _whole(stack, model)
    assert message["content"] == ANSWER
    assert "sandbox" not in orjson.dumps(message).decode()
    assert ("reasoning_content" in message) is (model == "kimi-thinking")
    text, deltas = _streamed(stack, model)
    assert text == ANSWER and "sandbox" not in orjson.dumps(deltas).decode()
    assert any("reasoning_content" in d for d in deltas) is (model == "kimi-thinking")
    # Visible at debug level only, with the arguments the model gave its tool.
    logged = stack.server_log.read_text()
    assert "Kimi ran its ipython tool ipython:1" in logged and "math.sqrt" in logged
    assert "Kimi ran its web_search tool web_search:1" in logged


def test_the_models_web_search_results_are_the_sources_of_a_search_request(stack):
    assert _whole(stack, "kimi-search")["content"] == SOURCES + ANSWER
    assert _streamed(stack, "kimi-search")[0] == SOURCES + ANSWER
    # A plain request shows no sources, even though the sandbox searched (as it did above).
    assert _whole(stack)["content"] == ANSWER
    assert _whole(stack, "kimi-search-silent")["content"] == ANSWER


@pytest.mark.parametrize("style", ["emoji", "emoji_text", "pua"])
@pytest.mark.parametrize("chunks", [4, 60])
def test_citation_markers_become_numbers_or_vanish(stack, style, chunks):
    stack.emulator.admin("connect", {"citations": style})
    stack.emulator.admin("stream", {"chunks": chunks})   # 60: markers cut into single characters
    assert _whole(stack, "kimi-search")["content"] == SOURCES + ANSWER + "[2]"
    assert _streamed(stack, "kimi-search")[0] == SOURCES + ANSWER + "[2]"
    assert _whole(stack)["content"] == ANSWER
    assert _streamed(stack)[0] == ANSWER


def _status(stack) -> dict:
    return requests.get(stack.url + "/v1/status", headers=stack.headers(), timeout=10).json()


def test_a_degrade_notice_is_logged_once_per_turn_and_counted_in_status(stack):
    before = _status(stack)["model_degrade_notices"]["count"]
    stack.emulator.fault("connect_chat", degrade=True)
    assert _whole(stack)["content"] == ANSWER
    notices = _status(stack)["model_degrade_notices"]
    assert notices["count"] == before + 1 and notices["last_account"] == "acct0" and notices["last_seen_at"]
    assert _whole(stack)["content"] == ANSWER
    assert _status(stack)["model_degrade_notices"]["count"] == before + 1
    logged = [line for line in stack.server_log.read_text().splitlines() if "TYPE_MODEL_DEGRADE" in line]
    assert len(logged) == before + 1 and "'acct0'" in logged[-1]


@pytest.mark.parametrize("stream", [False, True])
def test_a_free_user_overload_before_the_answer_is_503_with_retry_after(stack, stream):
    deleted = stack.emulator.stats()["chats_deleted"]
    stack.emulator.fault("connect_chat", overloaded_free=True, times=2)   # every attempt (max_attempts 2)
    response = stack.post({"model": "kimi", "messages": USER, "stream": stream})
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "upstream_overloaded" and int(response.headers["Retry-After"]) > 0
    # The chats Kimi opened for the two refused attempts are deleted.
    wait_until(lambda: stack.emulator.stats()["chats_deleted"] >= deleted + 2, 10, "the refused chats' deletion")


def test_a_free_user_overload_on_one_attempt_fails_over(stack):
    stack.emulator.fault("connect_chat", overloaded_free=True)
    assert _whole(stack)["content"] == ANSWER


def test_a_free_user_overload_after_the_answer_began_is_an_error_frame(stack):
    stack.emulator.admin("connect", {"end_error": {"code": "resource_exhausted", "reason": OVERLOAD_REASON}})
    response = stack.post({"model": "kimi", "messages": USER, "stream": True})
    assert response.status_code == 200
    events = _events(response)
    assert "[DONE]" not in events and events[-1]["error"]["code"] == "upstream_overloaded"
    whole = stack.post({"model": "kimi", "messages": USER})
    assert whole.status_code == 503 and whole.headers["Retry-After"]


def test_an_empty_end_frame_is_a_valid_end(stack):
    stack.emulator.admin("connect", {"empty_end": True})
    frames = _raw_frames(stack, {"message": {"role": "user", "blocks": [{"text": {"content": "x"}}]}})
    assert frames[-1] == (END_STREAM, {})   # an empty payload parses as {}
    assert _whole(stack)["content"] == ANSWER
    assert _streamed(stack)[0] == ANSWER


def test_a_system_message_in_the_stream_is_never_answer_text(stack):
    stack.emulator.admin("connect", {"system_message": True})
    assert _whole(stack)["content"] == ANSWER
    text, deltas = _streamed(stack)
    assert text == ANSWER and SYSTEM_TEXT not in orjson.dumps(deltas).decode()


@pytest.mark.parametrize("text,out", [
    ("a 🛠web_search:1#1🛠 b", "a [2] b"),
    ("a 🛠web_search:1#0:~:text=some%20words🛠", "a [1]"),
    ("a \ue3a0cite\ue3a3web_search:1#0\ue3a3web_search:1#1\ue3a8.", "a [1][2]."),
    ("unknown 🛠ipython:1#0🛠 and 🛠web_search:2#7🛠 go", "unknown  and  go"),
    ("## 🛠️ Tools and 🎨 art", "## 🛠️ Tools and 🎨 art"),          # emoji in text, not markers
    ("ends open 🛠web_search:1#", "ends open 🛠web_search:1#"),       # never closed: plain text after all
    ("🛠 " + "x" * 500, "🛠 " + "x" * 500),
])
def test_citation_filter_in_any_split(text, out):
    numbers = {"web_search:1#0": 1, "web_search:1#1": 2}.get
    whole = CitationFilter(numbers)
    assert whole.feed(text) + whole.flush() == out
    for cut in range(len(text) + 1):
        split = CitationFilter(numbers)
        assert split.feed(text[:cut]) + split.feed(text[cut:]) + split.flush() == out, cut
