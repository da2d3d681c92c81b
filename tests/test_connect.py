"""Kimi's Connect protocol: framing, every error code, faults, and account pools that mix protocols."""

from __future__ import annotations

import time

import orjson
import pytest
import requests

from common.connect_frames import END_STREAM, FrameError, FrameParser, encode
from tests.helpers import Stack, read_json, wait_until, write_json
from tests.kimi_emulator.tokens import mint_jwt

USER = [{"role": "user", "content": "hello"}]
CHAT_URL = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
ANSWER = "收到 🌙 turn 1: hello"


def test_frames_survive_any_split_and_coalescing():
    messages = [{"op": "set", "chat": {"id": "c1"}}, {"block": {"text": {"content": "月亮 🌙"}}}, {}]
    data = encode(messages[0]) + encode(messages[1]) + encode(messages[2], END_STREAM)
    for cut in range(len(data) + 1):
        parser = FrameParser()
        got = parser.feed(data[:cut]) + parser.feed(data[cut:])
        assert got == [(0, messages[0]), (0, messages[1]), (END_STREAM, {})] and parser.pending == 0
    parser = FrameParser()
    assert [m for b in data for m in parser.feed(bytes([b]))] == [(0, messages[0]), (0, messages[1]), (END_STREAM, {})]


@pytest.mark.parametrize("bad,why", [
    (b"\x01\x00\x00\x00\x02{}", "compressed"), (b"\x00\x00\x00\x00\x03abc", "not JSON"),
    (b"\x00\x00\x00\x00\x02[]", "not a JSON object"), (b"\x00\xff\xff\xff\xff", "bytes")])
def test_bad_frames_are_refused(bad, why):
    with pytest.raises(FrameError, match=why):
        FrameParser().feed(bad)


@pytest.fixture
def connect(tmp_path):
    s = Stack(tmp_path, protocol="connect", server={"max_attempts": 2, "refresh_wait_seconds": 1})
    yield s
    s.close()


def _raw_chat(stack, body: bytes) -> list[tuple[int, dict]]:
    response = requests.post(stack.emulator.url + CHAT_URL, data=body, timeout=10, headers={
        "Authorization": "Bearer " + stack.accounts[0]["access_token"], "Content-Type": "application/connect+json"})
    assert response.status_code == 200
    return FrameParser().feed(response.content)


@pytest.mark.parametrize("body", [b'{"message": {}}', b"\x00\x00\x00\x00\x09{}", b"\x01\x00\x00\x00\x02{}", b""])
def test_the_emulator_refuses_unframed_and_bad_requests_with_invalid_argument(connect, body):
    frames = _raw_chat(connect, body)
    assert frames[-1][0] == END_STREAM and frames[-1][1]["error"]["code"] == "invalid_argument"


def test_the_emulator_takes_snake_and_camel_case_and_empty_ids(connect):
    for body in ({"message": {"role": "user", "blocks": [{"text": {"content": "x"}}]}, "chat_id": ""},
                 {"message": {"role": "user", "blocks": [{"text": {"content": "x"}}], "parentId": ""}, "chatId": ""}):
        frames = _raw_chat(connect, encode(body))
        assert frames[-1] == (END_STREAM, {}) and frames[0][1]["chat"]["id"]


@pytest.mark.parametrize("end_error,status,code", [
    ({"code": "resource_exhausted"}, 429, "rate_limit_exceeded"),
    ({"code": "resource_exhausted", "paywall": True}, 429, "upstream_paywall"),
    ({"code": "MODEL_RATE_LIMIT"}, 429, "rate_limit_exceeded"),
    ({"code": "invalid_argument"}, 502, "upstream_error"),
    ({"code": "permission_denied"}, 502, "upstream_error"),
    ({"code": "unavailable"}, 502, "upstream_error"),
    ({"code": "deadline_exceeded"}, 504, "upstream_timeout"),
])
def test_errors_after_done_are_never_taken_for_success(connect, end_error, status, code):
    connect.emulator.admin("connect", {"end_error": end_error})
    response = connect.post({"model": "kimi", "messages": USER})
    assert response.status_code == status and response.json()["error"]["code"] == code
    frames = [f for f in connect.post({"model": "kimi", "messages": USER, "stream": True}).content.split(b"\n\n") if f]
    assert b"[DONE]" not in frames[-1] and orjson.loads(frames[-1][6:])["error"]["code"] == code
    if code == "rate_limit_exceeded":
        assert int(response.headers["Retry-After"]) > 0


def test_a_token_refused_mid_answer_goes_to_the_refresher_at_once(tmp_path):
    stack = Stack(tmp_path, protocol="connect", refresher=True)
    try:
        stack.emulator.admin("connect", {"end_error": {"code": "unauthenticated"}})
        response = stack.post({"model": "kimi", "messages": USER})
        assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_auth_failed"
        # Tokens live 900 s here: only the report can make the refresher act now.
        wait_until(lambda: stack.emulator.stats()["refresh_ok"] >= 1, what="the refused token to be replaced")
        frames = [f for f in stack.post({"model": "kimi", "messages": USER, "stream": True}).content.split(b"\n\n") if f]
        assert orjson.loads(frames[-1][6:])["error"]["code"] == "upstream_auth_failed"
        wait_until(lambda: stack.emulator.stats()["refresh_ok"] >= 2, what="the refused token to be replaced")
        stack.emulator.admin("connect", {"end_error": None})
        assert stack.post({"model": "kimi", "messages": USER}).json()["choices"][0]["message"]["content"] == ANSWER
    finally:
        stack.close()


@pytest.mark.parametrize("code,status,api_code", [
    ("unauthenticated", 502, "upstream_auth_failed"), ("resource_exhausted", 429, "rate_limit_exceeded"),
    ("unavailable", 502, "upstream_error"), ("deadline_exceeded", 504, "upstream_timeout"),
    ("invalid_argument", 502, "upstream_error")])
def test_errors_before_the_answer_map_to_statuses(connect, code, status, api_code):
    connect.emulator.fault("connect_chat", status=401 if code == "unauthenticated" else 400, times=4,
                           body={"code": code, "message": "injected"})
    response = connect.post({"model": "kimi", "messages": USER})
    assert response.status_code == status and response.json()["error"]["code"] == api_code


def test_an_overloaded_block_exception_is_503_with_retry_after(connect):
    connect.emulator.admin("connect", {"overloaded": True})
    response = connect.post({"model": "kimi", "messages": USER})
    assert response.status_code == 503 and response.json()["error"]["code"] == "upstream_overloaded"
    assert response.headers["Retry-After"]


@pytest.mark.parametrize("switches", [{"duplicate_frames": True}, {"coalesce": True}])
def test_duplicate_and_coalesced_frames_give_the_exact_text(connect, switches):
    connect.emulator.admin("connect", switches)
    assert connect.post({"model": "kimi", "messages": USER}).json()["choices"][0]["message"]["content"] == ANSWER


def test_an_in_stream_unauthenticated_error_is_handled_like_http_401(tmp_path):
    stack = Stack(tmp_path, protocol="connect", refresher=True)
    try:
        stack.emulator.admin("connect", {"auth_in_stream": True})
        stack.emulator.admin("expire_access")
        response = stack.post({"model": "kimi", "messages": USER})
        assert response.status_code == 200 and stack.emulator.stats()["refresh_ok"] >= 1
    finally:
        stack.close()


@pytest.mark.parametrize("model,thinking,search", [
    ("kimi", False, False), ("kimi-k1", True, False), ("kimi-search", False, True), ("kimi-k1-search", True, True)])
def test_thinking_and_search_over_connect(connect, model, thinking, search):
    result = connect.post({"model": model, "messages": USER}).json()
    body = connect.emulator.received("connect_chat")[-1]["body"]
    assert body["options"]["thinking"] is thinking
    assert (body["tools"] == [{"type": "TOOL_TYPE_SEARCH", "search": {}}]) is search
    assert "chat_id" not in body and "parent_id" not in body["message"]   # omitted, not empty, for a new chat
    message = result["choices"][0]["message"]
    assert message["content"].endswith(ANSWER) and message["content"].startswith("Sources:\n1. [") is search
    assert ("reasoning_content" in message) is thinking


def test_features_that_need_rest_are_refused_clearly_over_connect(connect):
    for model in ("kimi-research", "kimi-math"):
        response = connect.post({"model": model, "messages": USER})
        assert response.status_code == 400 and response.json()["error"]["code"] == "unsupported_over_connect"


def test_chats_are_deleted_with_delete_chat(connect):
    connect.post({"model": "kimi", "messages": USER})
    from tests.helpers import wait_until
    wait_until(lambda: connect.emulator.stats()["live_chats"] == 0, 10, "DeleteChat")
    assert connect.emulator.stats()["requests"]["connect_DeleteChat"] == 1


def test_the_emulator_unary_rpcs(connect):
    connect.post({"model": "kimi", "conversation_id": "none", "messages": USER})
    headers = {"Authorization": "Bearer " + connect.accounts[0]["access_token"], "Content-Type": "application/json"}

    def rpc(path: str, body: dict) -> requests.Response:
        return requests.post(connect.emulator.url + "/apiv2/" + path, json=body, headers=headers, timeout=10)
    chats = rpc("kimi.chat.v1.ChatService/ListChats", {"page_size": 10}).json()["chats"]
    chat_id = chats[0]["id"]
    assert rpc("kimi.gateway.chat.v1.ChatService/GetChat", {"chatId": chat_id}).json()["chat"]["id"] == chat_id
    messages = rpc("kimi.gateway.chat.v1.ChatService/ListMessages", {"chat_id": chat_id}).json()["messages"]
    assert [m["role"] for m in messages] == ["assistant", "user"]
    assert rpc("kimi.gateway.config.v1.ConfigService/GetAvailableModels", {}).json()["availableModels"]
    assert rpc("kimi.gateway.order.v1.SubscriptionService/GetSubscription", {}).json()["subscription"]["userId"]
    missing = rpc("kimi.chat.v1.ChatService/DeleteChat", {"chat_id": "nope"})
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert rpc("kimi.chat.v1.ChatService/BatchDeleteChats", {"chat_ids": [chat_id]}).json() == {}
    # A REST DELETE cannot remove a chat made over Connect (pitfall 11); the emulator is as strict.
    headers.pop("Content-Type")
    assert requests.delete(f"{connect.emulator.url}/api/chat/{chat_id}", headers=headers, timeout=10).status_code == 404


def test_a_pool_that_mixes_both_kinds_of_account(tmp_path):
    # The legacy web serves both protocols; REST is now a per-account choice (auto means Connect).
    stack = Stack(tmp_path, accounts=2, protocol="auto", web="legacy")
    try:
        doc = read_json(stack.config_path)
        doc["accounts"][0]["protocol"] = "rest"
        doc["accounts"][1] = {"name": "kimi-auth-only", "access_token": stack.accounts[1]["access_token"]}
        write_json(stack.config_path, doc)
        for _ in range(4):
            assert stack.post({"model": "kimi", "messages": USER}).json()["choices"][0]["message"]["content"] == ANSWER
        received = stack.emulator.stats()["requests"]
        assert received["completion"] >= 1 and received["connect_chat"] >= 1
        status = requests.get(stack.url + "/v1/status", headers=stack.headers(), timeout=10).json()["accounts"]
        assert [(a["name"], a["protocol"]) for a in status] == [("acct0", "rest"), ("kimi-auth-only", "connect")]
        assert all(a["access_token_expires_at"] for a in status)
        assert status[1]["refresh_token"] is None
    finally:
        stack.close()


def test_auto_means_connect_for_every_kind_of_account(tmp_path):
    stack = Stack(tmp_path, accounts=2, protocol="auto")
    try:
        doc = read_json(stack.config_path)
        doc["accounts"][1] = {"name": "kimi-auth-only", "access_token": stack.accounts[1]["access_token"]}
        write_json(stack.config_path, doc)
        for _ in range(4):
            assert stack.post({"model": "kimi", "messages": USER}).json()["choices"][0]["message"]["content"] == ANSWER
        assert stack.emulator.stats()["requests"]["connect_chat"] == 4 and stack.emulator.received("not_found") == []
        status = requests.get(stack.url + "/v1/status", headers=stack.headers(), timeout=10).json()["accounts"]
        assert [(a["name"], a["protocol"]) for a in status] == [("acct0", "connect"), ("kimi-auth-only", "connect")]
        assert status[0]["next_refresh_in_seconds"] > 0 and status[1]["next_refresh_in_seconds"] is None
    finally:
        stack.close()


def test_an_expired_kimi_auth_only_account_is_not_used(tmp_path):
    stack = Stack(tmp_path, protocol="auto")
    try:
        dead = mint_jwt({"typ": "access", "app_id": "kimi", "sub": "x", "iat": int(time.time()) - 100,
                         "exp": int(time.time()) - 10})
        doc = read_json(stack.config_path)
        doc["accounts"] = [{"name": "expired", "access_token": dead}]
        write_json(stack.config_path, doc)
        response = stack.post({"model": "kimi", "messages": USER})
        assert response.status_code == 503 and response.json()["error"]["code"] == "no_available_account"
    finally:
        stack.close()
