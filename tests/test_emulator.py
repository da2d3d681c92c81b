"""The emulator itself: faithful to kimi-protocol.md §4 and strict where Kimi may be strict."""

from __future__ import annotations

import threading

import orjson
import pytest
import requests

from common.connect_frames import FrameParser, encode
from tests.helpers import Emulator
from tests.kimi_emulator.answers import split_frame
from tests.kimi_emulator.auth_rpc import REFRESH_RPC_PATH
from tests.kimi_emulator.tokens import token_digest

# Every REST path of the legacy web (method, path); the 2026 web answers each with 404.
LEGACY_PATHS = [("GET", "/api/auth/token/refresh"), ("POST", "/api/chat"), ("POST", "/api/chat/list"),
                ("POST", "/api/chat/cnndivilnl96vah411dg/completion/stream"),
                ("DELETE", "/api/chat/cnndivilnl96vah411dg"), ("POST", "/api/pre-sign-url"), ("POST", "/api/file"),
                ("POST", "/api/file/parse_process"), ("GET", "/api/chat/research/usage")]


@pytest.fixture
def emulator(legacy_emulator):
    """This file's REST tests run against the legacy web, which still serves REST."""
    return legacy_emulator


@pytest.fixture
def web2026(tmp_path):
    """The emulator's default: the 2026 web."""
    emu = Emulator(tmp_path)
    yield emu
    emu.close()


def _auth(token: str) -> dict:
    return {"Authorization": "Bearer " + token}


def _events(response) -> list[dict]:
    return [orjson.loads(block[6:]) for block in response.content.split(b"\n\n") if block.startswith(b"data: ")]


def _chat(emulator, access: str) -> str:
    r = emulator.http.post(f"{emulator.url}/api/chat", headers=_auth(access), json={"name": "t", "is_example": False})
    assert r.status_code == 200
    return r.json()["id"]


def _complete(emulator, access, chat_id, text="hello", **extra):
    return emulator.http.post(f"{emulator.url}/api/chat/{chat_id}/completion/stream", headers=_auth(access),
                              json={"messages": [{"role": "user", "content": text}], **extra}, timeout=30)


def test_strict_rotation_kills_a_used_refresh_token_and_counts_the_reuse(emulator):
    account = emulator.new_account()
    url = f"{emulator.url}/api/auth/token/refresh"
    first = emulator.http.get(url, headers=_auth(account["refresh_token"]))
    assert first.status_code == 200 and list(first.json()) == ["access_token", "refresh_token"]
    again = emulator.http.get(url, headers=_auth(account["refresh_token"]))
    assert again.status_code == 401 and again.json()["error_type"] == "auth.token.invalid"
    assert emulator.stats()["refresh_token_reuses"] == 1
    emulator.admin("settings", {"rotation": "lenient"})
    assert emulator.http.get(url, headers=_auth(account["refresh_token"])).status_code == 200


def test_expiry_revocation_and_the_clock(emulator):
    account = emulator.new_account()
    user = f"{emulator.url}/api/user"
    assert emulator.http.get(user, headers=_auth(account["access_token"])).json()["id"] == account["user_id"]
    emulator.admin("clock", {"advance": 901})
    assert emulator.http.get(user, headers=_auth(account["access_token"])).status_code == 401
    fresh = emulator.new_account()
    emulator.admin("expire_access")
    assert emulator.http.get(user, headers=_auth(fresh["access_token"])).status_code == 401
    emulator.admin("revoke", {"user_id": fresh["user_id"]})
    r = emulator.http.get(f"{emulator.url}/api/auth/token/refresh", headers=_auth(fresh["refresh_token"]))
    assert r.status_code == 401


def test_a_full_answer_has_every_event_in_order(emulator):
    access = emulator.new_account()["access_token"]
    chat_id = _chat(emulator, access)
    r = _complete(emulator, access, chat_id, "天气", use_search=True, model="k1")
    assert r.headers["Content-Type"].startswith("text/event-stream")
    kinds = [e["event"] for e in _events(r)]
    assert kinds[:2] == ["req", "resp"] and kinds[-2:] == ["rename", "all_done"]
    assert kinds.index("search_plus") < kinds.index("k1") < kinds.index("cmpl")
    text = "".join(e["text"] for e in _events(r) if e["event"] == "cmpl")
    assert text == "收到 🌙 turn 1: 天气"
    assert b"event:" not in r.content and all(line.startswith(b"data: ") for line in r.content.split(b"\n\n") if line)


def test_history_is_kept_per_chat_and_deleted_chats_answer_json(emulator):
    access = emulator.new_account()["access_token"]
    chat_id = _chat(emulator, access)
    _complete(emulator, access, chat_id, "first")
    second = "".join(e.get("text", "") for e in _events(_complete(emulator, access, chat_id, "second"))
                     if e["event"] == "cmpl")
    assert "turn 2" in second and "earlier you said: first" in second
    assert emulator.http.delete(f"{emulator.url}/api/chat/{chat_id}", headers=_auth(access)).status_code == 200
    gone = _complete(emulator, access, chat_id)
    assert gone.status_code == 404 and gone.json()["error_type"] == "chat.not_found"
    assert emulator.stats()["live_chats"] == 0


def test_a_second_stream_on_the_same_chat_is_refused(emulator):
    access = emulator.new_account()["access_token"]
    chat_id = _chat(emulator, access)
    emulator.admin("stream", {"stall_after": 1, "stall_seconds": 30})
    first = requests.post(f"{emulator.url}/api/chat/{chat_id}/completion/stream", headers=_auth(access),
                          json={"messages": [{"role": "user", "content": "x"}]}, stream=True, timeout=30)
    try:
        assert emulator.stats()["open_streams"] == 1
        second = _complete(emulator, access, chat_id)
        assert second.status_code == 400 and second.json()["error_type"] == "chat.user_stream_pushing"
    finally:
        first.close()


@pytest.mark.parametrize("switch,expect", [
    ({"error_after": 1}, "error"), ({"length_cap": 5}, "length"), ({"cut_after": 2}, "cut")])
def test_stream_faults(emulator, switch, expect):
    access = emulator.new_account()["access_token"]
    chat_id = _chat(emulator, access)
    emulator.admin("stream", switch)
    if expect == "cut":
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            _complete(emulator, access, chat_id)
        return
    events = _events(_complete(emulator, access, chat_id, "a long enough prompt"))
    kinds = [e["event"] for e in events]
    assert expect in kinds
    if expect == "error":
        assert kinds[-1] == "error" and events[-1]["error"]["error_type"] == "openai.completion.stream"
    else:
        collected, rounds = list(events), 0
        while collected[-2]["event"] == "length":   # continue on the req id until the answer is whole
            rounds += 1
            segment_id = [e for e in collected if e["event"] == "req"][-1]["id"]
            collected += _events(_complete(emulator, access, chat_id, " ", action="continue", segment_id=segment_id))
        full = "".join(e["text"] for e in collected if e["event"] == "cmpl")
        assert full == "收到 🌙 turn 1: a long enough prompt" and rounds == 6


def test_split_writes_cut_inside_utf8_and_inside_data_lines():
    data = b'data: {"text":"\xe6\x94\xb6\xf0\x9f\x8c\x99"}\n\n'
    pieces = split_frame(data)
    assert b"".join(pieces) == data and pieces[0] == b"dat"
    with pytest.raises(UnicodeDecodeError):
        [p.decode() for p in pieces]


def test_camouflage_calls_answer_or_fail_on_demand(emulator):
    access = emulator.new_account()["access_token"]
    assert emulator.http.post(f"{emulator.url}/api/suggestion", headers=_auth(access), json={}).json() == {}
    emulator.admin("settings", {"camouflage_errors": True})
    r = emulator.http.post(f"{emulator.url}/api/suggestion", headers=_auth(access), json={})
    assert r.status_code == 500 and r.json()["message"] == "服务内部错误"


def test_unknown_agents_and_research_usage(emulator):
    access = emulator.new_account()["access_token"]
    r = emulator.http.post(f"{emulator.url}/api/chat", headers=_auth(access), json={"kimiplus_id": "zzzzzzzzzzzzzzzzzzzz"})
    assert r.status_code == 404 and r.json()["message"] == "找不到对应的KimiPlus"
    chat_id = _chat(emulator, access)
    _complete(emulator, access, chat_id, use_research=True)
    usage = emulator.http.get(f"{emulator.url}/api/chat/research/usage", headers=_auth(access)).json()
    assert usage == {"remain": 19, "total": 20, "used": 1}


def test_injected_http_faults_are_one_shot(emulator):
    emulator.fault("user", status=503, times=2)
    access = emulator.new_account()["access_token"]
    codes = [emulator.http.get(f"{emulator.url}/api/user", headers=_auth(access)).status_code for _ in range(3)]
    assert codes == [503, 503, 200]


def test_the_emulator_serves_requests_concurrently(emulator):
    access = emulator.new_account()["access_token"]
    emulator.admin("stream", {"event_delay": 0.05})
    results = []

    def one():
        chat_id = _chat(emulator, access)
        results.append(_complete(emulator, access, chat_id, "p").status_code)
    threads = [threading.Thread(target=one) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 5


def test_the_refresh_rpc_takes_both_spellings_rotates_strictly_and_counts(web2026):
    emu = web2026
    first, second = emu.new_account(), emu.new_account()
    url = emu.url + REFRESH_RPC_PATH
    a = emu.http.post(url, json={"refresh_token": first["refresh_token"]}, timeout=10)
    b = emu.http.post(url, json={"refreshToken": second["refresh_token"]}, timeout=10)
    for answer in (a, b):
        assert answer.status_code == 200 and list(answer.json()) == ["accessToken", "refreshToken"]
    user = emu.http.get(f"{emu.url}/api/user", headers=_auth(a.json()["accessToken"]), timeout=10)
    assert user.json()["id"] == first["user_id"]
    reused = emu.http.post(url, json={"refresh_token": first["refresh_token"]}, timeout=10)
    unknown = emu.http.post(url, json={"refresh_token": "a.b.c"}, timeout=10)
    for refused in (reused, unknown):
        assert refused.status_code == 401 and refused.json() == {"code": "unauthenticated", "message": "invalid claims"}
    assert emu.http.post(url, json={}, timeout=10).status_code == 400
    stats = emu.stats()
    assert (stats["refresh_calls"], stats["refresh_ok"], stats["refresh_token_reuses"], stats["refresh_rejected"]) \
        == (4, 2, 1, 2)
    seen = emu.received("refresh_rpc")
    assert [r["body"]["spelling"] for r in seen] == ["refresh_token", "refreshToken", "refresh_token", "refresh_token",
                                                     ""]
    assert seen[2]["body"]["token"] == token_digest(first["refresh_token"])
    assert first["refresh_token"] not in str(seen)


def test_the_refresh_rpc_takes_injected_faults(web2026):
    emu = web2026
    token = emu.new_account()["refresh_token"]
    url = emu.url + REFRESH_RPC_PATH
    emu.fault("refresh_rpc", status=503)
    emu.fault("refresh_rpc", status=404)
    emu.fault("refresh_rpc", stall=0.5)
    assert emu.http.post(url, json={"refresh_token": token}, timeout=10).status_code == 503
    assert emu.http.post(url, json={"refresh_token": token}, timeout=10).status_code == 404
    with pytest.raises(requests.ConnectionError):
        emu.http.post(url, json={"refresh_token": token}, timeout=10)
    assert emu.stats()["refresh_calls"] == 0   # faults answer before the token is looked at
    assert emu.http.post(url, json={"refresh_token": token}, timeout=10).status_code == 200


def test_the_2026_web_serves_connect_and_the_rpc_only(web2026):
    emu = web2026
    account = emu.new_account()
    assert emu.stats()["web"] == "2026"
    for method, path in LEGACY_PATHS:
        r = emu.http.request(method, emu.url + path, headers=_auth(account["access_token"]), json={}, timeout=10)
        assert r.status_code == 404, (method, path)
    assert [r["path"] for r in emu.received("not_found")] == [p for _, p in LEGACY_PATHS]
    chat = emu.http.post(emu.url + "/apiv2/kimi.gateway.chat.v1.ChatService/Chat", timeout=10,
                         data=encode({"message": {"blocks": [{"text": {"content": "hi"}}]}}),
                         headers={**_auth(account["access_token"]), "Content-Type": "application/connect+json"})
    assert chat.status_code == 200
    text = "".join(m["block"]["text"]["content"] for _, m in FrameParser().feed(chat.content)
                   if m.get("mask") == "block.text.content")
    assert text == "收到 🌙 turn 1: hi"
    assert emu.refresh(account["refresh_token"]).status_code == 200


def test_the_legacy_web_has_no_rpc_and_the_web_switches_live(emulator):
    account = emulator.new_account()
    rpc = emulator.http.post(emulator.url + REFRESH_RPC_PATH, json={"refresh_token": account["refresh_token"]},
                             timeout=10)
    assert rpc.status_code == 404 and emulator.stats()["refresh_calls"] == 0
    legacy = emulator.refresh(account["refresh_token"])
    assert legacy.status_code == 200 and list(legacy.json()) == ["access_token", "refresh_token"]
    assert emulator.http.post(emulator.url + "/_admin/web", json={"web": "2026"}, timeout=10).json() == {"web": "2026"}
    gone = emulator.http.get(f"{emulator.url}/api/auth/token/refresh", timeout=10,
                             headers=_auth(legacy.json()["refresh_token"]))
    assert gone.status_code == 404
    moved = emulator.http.post(emulator.url + REFRESH_RPC_PATH, json={"refresh_token": legacy.json()["refresh_token"]},
                               timeout=10)
    assert moved.status_code == 200
    assert emulator.http.post(emulator.url + "/_admin/web", json={"web": "2025"}, timeout=10).status_code == 400
