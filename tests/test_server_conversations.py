"""Conversations: kimi-free-api's `conversation_id`, and the stateful /v1/chat/completions/{id} path."""

from __future__ import annotations

import orjson
import requests

from tests.helpers import read_json, wait_until


def _ask(stack, text: str, path: str = "/v1/chat/completions", **extra) -> dict:
    response = stack.post({"model": "kimi", "messages": [{"role": "system", "content": "sys"},
                                                         {"role": "user", "content": text}], **extra}, path=path)
    assert response.status_code == 200, response.text
    return response.json()


def _sent_text(stack) -> list:
    if stack.protocol == "rest":
        return stack.emulator.received("completion")[-1]["body"]["messages"]
    body = stack.emulator.received("connect_chat")[-1]["body"]
    assert body["chat_id"] and body["message"]["parent_id"]   # continuing after the last answer
    return [{"role": "user", "content": body["message"]["blocks"][0]["text"]["content"]}]


def test_conversation_id_continues_the_kimi_chat_natively(any_stack):
    stack = any_stack
    first = _ask(stack, "my name is Ada", conversation_id="none")
    chat_id = first["id"]
    assert len(chat_id) == 20 and first["choices"][0]["message"]["content"].startswith("收到 🌙 turn 1: System: sys")
    second = _ask(stack, "what is my name?", conversation_id=chat_id)
    assert second["id"] == chat_id
    text = second["choices"][0]["message"]["content"]
    assert text.startswith("收到 🌙 turn 2: what is my name?") and "my name is Ada" in text
    # Only the new message went up; the chat was never deleted.
    assert _sent_text(stack) == [{"role": "user", "content": "what is my name?"}]
    assert stack.emulator.stats()["chats_deleted"] == 0 and stack.emulator.stats()["live_chats"] == 1
    frames = stack.post({"model": "kimi", "stream": True, "conversation_id": chat_id,
                         "messages": [{"role": "user", "content": "again"}]}).content.split(b"\n\n")
    assert {orjson.loads(f[6:])["id"] for f in frames if f.startswith(b"data: {")} == {chat_id}


def test_an_unknown_conversation_id_is_404(stack):
    response = stack.post({"model": "kimi", "conversation_id": "cnndivilnl96vah411dg",
                           "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 404 and response.json()["error"]["param"] == "conversation_id"


def test_the_stateful_path_keeps_context_across_a_restart_and_delete_forgets_it(any_stack):
    stack = any_stack
    path = "/v1/chat/completions/support-ticket-42"
    assert "turn 1" in _ask(stack, "first", path)["choices"][0]["message"]["content"]
    assert "turn 2" in _ask(stack, "second", path)["choices"][0]["message"]["content"]
    saved = read_json(stack.config_path.parent / "conversations.json")["stateful"]["support-ticket-42"]
    assert saved["account"] == "acct0" and len(saved["chat_id"]) == 20
    stack.server.terminate()
    stack.server.wait(30)
    stack.start_server()
    third = _ask(stack, "third", path)["choices"][0]["message"]["content"]
    assert third.startswith("收到 🌙 turn 3: third") and "earlier you said: second" in third
    assert stack.emulator.stats()["live_chats"] == 1
    deleted = requests.delete(stack.url + path, headers=stack.headers(), timeout=10)
    assert deleted.status_code == 200 and deleted.json()["deleted"] and deleted.json()["upstream_deleted"]
    assert stack.emulator.stats()["live_chats"] == 0
    assert requests.delete(stack.url + path, headers=stack.headers(), timeout=10).status_code == 404
    assert "turn 1" in _ask(stack, "fresh start", path)["choices"][0]["message"]["content"]


def test_a_stateful_conversation_whose_chat_vanished_says_so_and_starts_over(stack):
    path = "/v1/chat/completions/c1"
    _ask(stack, "hello", path)
    chat_id = read_json(stack.config_path.parent / "conversations.json")["stateful"]["c1"]["chat_id"]
    stack.emulator.http.delete(f"{stack.emulator.url}/api/chat/{chat_id}",
                               headers={"Authorization": "Bearer " + stack.accounts[0]["access_token"]})
    gone = stack.post({"model": "kimi", "messages": [{"role": "user", "content": "x"}]}, path=path)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "conversation_not_found"
    assert "turn 1" in _ask(stack, "again", path)["choices"][0]["message"]["content"]


def test_conversation_paths_are_validated_and_need_the_key(stack):
    assert requests.delete(stack.url + "/v1/chat/completions/x", timeout=10).status_code == 401
    assert stack.post({"model": "kimi", "messages": [{"role": "user", "content": "x"}]},
                      path="/v1/chat/completions/bad id").status_code == 404
    wait_until(lambda: stack.emulator.stats()["live_chats"] == 0, 10, "no chat to be left")


def test_an_unusable_conversations_file_fails_only_conversations(tmp_path):
    from tests.helpers import Stack
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    stack = Stack(tmp_path, server={"conversations_file": str(blocker / "conversations.json")})
    try:
        assert _ask(stack, "plain")["choices"][0]["message"]["content"]
        response = stack.post({"model": "kimi", "messages": [{"role": "user", "content": "x"}]},
                              path="/v1/chat/completions/c1")
        assert response.status_code == 503 and response.json()["error"]["code"] == "conversations_unavailable"
    finally:
        stack.close()


def test_a_corrupt_conversations_file_is_a_clear_503_not_a_crash(stack):
    (stack.config_path.parent / "conversations.json").write_text("{broken")
    response = stack.post({"model": "kimi", "messages": [{"role": "user", "content": "x"}]},
                          path="/v1/chat/completions/c1")
    assert response.status_code == 503 and response.json()["error"]["code"] == "conversations_unavailable"
    assert _ask(stack, "still fine")["choices"][0]["message"]["content"]
