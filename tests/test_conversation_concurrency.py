"""Conversations under concurrency: one Kimi chat per conversation, one turn at a time, never a 502 or an orphan."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers import Stack, read_json, wait_until, write_json

WAITING = "another turn of conversation"   # the server's log line for a turn that queues


def _body(text: str, **extra) -> dict:
    return {"model": "kimi", "messages": [{"role": "user", "content": text}], **extra}


def _waiting_lines(stack) -> int:
    return stack.server_log.read_text(errors="replace").count(WAITING)


def _race(stack, count: int, path: str, **extra) -> list[requests.Response]:
    """Send `count` turns at once while Kimi holds the first answer open; release it once the rest queue."""
    emulator = stack.emulator
    emulator.admin("stream", {"stall_after": 1, "stall_seconds": 3600})
    waiting_before = _waiting_lines(stack)
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(stack.post, _body(f"message {i}", **extra), path) for i in range(count)]
        # Queued behind the held answer (the fix), or visibly not: more chats, more answers in Kimi at once,
        # or answers (errors) already back.
        wait_until(lambda: (emulator.stats()["paused"] == 1
                            and _waiting_lines(stack) - waiting_before >= count - 1)
                   or emulator.stats()["chats_created"] > 1 or emulator.stats()["paused"] > 1
                   or any(f.done() for f in futures), 120, "the other turns to queue behind the held one")
        emulator.admin("stream", {"stall_after": None})
        # Release until every answer is back: a stream that started just before the switch changed still stalls.
        wait_until(lambda: emulator.admin("release") and all(f.done() for f in futures), 120, "every answer")
        return [f.result() for f in futures]


def _assert_answered_or_busy(responses: list[requests.Response]) -> list[str]:
    """Every turn answered (or refused as busy, with Retry-After), none failed; return the answers."""
    texts = []
    for response in responses:
        assert response.status_code in (200, 409), response.text
        if response.status_code == 409:
            error = response.json()["error"]
            assert error["code"] == "conversation_busy" and int(response.headers["Retry-After"]) > 0
        else:
            texts.append(response.json()["choices"][0]["message"]["content"])
    return texts


def _turn_numbers(texts: list[str]) -> list[int]:
    return sorted(int(re.search(r"turn (\d+)", t).group(1)) for t in texts)


def _first_turns_make_one_chat(stack) -> None:
    path = "/v1/chat/completions/ticket-7"
    texts = _assert_answered_or_busy(_race(stack, 8, path))
    stats = stack.emulator.stats()
    assert stats["chats_created"] == 1 and stats["live_chats"] == 1
    # One at a time, in one chat: each answer is the next turn of the same conversation.
    assert _turn_numbers(texts) == list(range(1, len(texts) + 1)) and len(texts) == 8
    deleted = requests.delete(stack.url + path, headers=stack.headers(), timeout=30)
    assert deleted.status_code == 200 and deleted.json()["upstream_deleted"]
    assert stack.emulator.stats()["live_chats"] == 0


def test_concurrent_first_turns_on_a_new_id_make_one_chat(any_stack):
    _first_turns_make_one_chat(any_stack)


@pytest.mark.parametrize("protocol", ["rest", "connect"])
def test_concurrent_first_turns_make_one_chat_across_server_processes(tmp_path, protocol):
    stack = Stack(tmp_path, server={"processes": 2}, protocol=protocol)
    try:
        _first_turns_make_one_chat(stack)
    finally:
        stack.close()


def test_concurrent_native_conversation_id_turns_queue_in_one_chat(any_stack):
    stack = any_stack
    first = stack.post(_body("hello", conversation_id="none")).json()
    chat_id = first["id"]
    texts = _assert_answered_or_busy(_race(stack, 4, "/v1/chat/completions", conversation_id=chat_id))
    assert _turn_numbers(texts) == [2, 3, 4, 5]
    assert stack.emulator.stats()["chats_created"] == 1
    _assert_chained(stack)


def _assert_chained(stack) -> None:
    """Over Connect, each turn continued after the previous answer: a chain, not branches off one message."""
    if stack.protocol == "connect":
        parents = [r["body"]["message"].get("parent_id") for r in stack.emulator.received("connect_chat")]
        assert len(set(parents)) == len(parents), parents


def test_concurrent_turns_on_an_existing_conversation_queue_instead_of_502(any_stack):
    stack = any_stack
    path = "/v1/chat/completions/existing"
    assert stack.post(_body("first"), path).status_code == 200
    texts = _assert_answered_or_busy(_race(stack, 4, path))
    assert _turn_numbers(texts) == [2, 3, 4, 5]
    assert stack.emulator.stats()["chats_created"] == 1
    _assert_chained(stack)


def test_a_turn_that_cannot_get_its_turn_in_time_is_a_409_with_retry_after(tmp_path):
    stack = Stack(tmp_path, server={"conversation_wait_seconds": 0.2})
    try:
        path = "/v1/chat/completions/busy"
        stack.emulator.admin("stream", {"stall_after": 1, "stall_seconds": 3600})
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(stack.post, _body("slow"), path)
            wait_until(lambda: stack.emulator.stats()["paused"] >= 1, 60, "the first answer to be held")
            busy = stack.post(_body("impatient"), path)
            assert busy.status_code == 409 and busy.json()["error"]["code"] == "conversation_busy"
            assert int(busy.headers["Retry-After"]) > 0
            refused_delete = requests.delete(stack.url + path, headers=stack.headers(), timeout=30)
            assert refused_delete.status_code == 409
            stack.emulator.admin("stream", {"stall_after": None})
            stack.emulator.admin("release")
            assert held.result().status_code == 200
        assert stack.emulator.stats()["chats_created"] == 1
        assert requests.delete(stack.url + path, headers=stack.headers(), timeout=30).status_code == 200
        assert stack.emulator.stats()["live_chats"] == 0
    finally:
        stack.close()


def test_a_new_chat_that_cannot_be_recorded_is_deleted_not_orphaned(stack):
    # Kimi holds the chat creation while the conversations file breaks: the chat it then makes cannot be recorded.
    stack.emulator.fault("chat_create", stall=3600, proceed=True)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(stack.post, _body("x"), "/v1/chat/completions/c9")
        wait_until(lambda: stack.emulator.stats()["paused"] >= 1, 60, "the chat creation to be held")
        (stack.config_path.parent / "conversations.json").write_text("{broken")
        stack.emulator.admin("release")
        failed = held.result()
    assert failed.status_code == 503 and failed.json()["error"]["code"] == "conversations_unavailable"
    assert stack.emulator.stats()["chats_created"] == 1
    wait_until(lambda: stack.emulator.stats()["live_chats"] == 0, 30, "the unrecorded chat to be deleted")


# --- hand-edited conversations.json --------------------------------------------------------------

def _hand_edit(stack, key: str, entry: object) -> None:
    path = stack.config_path.parent / "conversations.json"
    doc = read_json(path)
    doc["stateful"][key] = entry
    write_json(path, doc)


@pytest.mark.parametrize("change, field", [
    ({"protocol": "grpc"}, "protocol"),
    ({"protocol": 7}, "protocol"),
    ({"chat_id": None}, "chat_id"),
    ({"chat_id": 12345}, "chat_id"),
    ({"chat_id": "../../api/user"}, "chat_id"),
    ({"account": ["acct0"]}, "account"),
    ({"parent_id": 3}, "parent_id"),
])
def test_a_hand_edited_entry_is_a_503_naming_the_field_and_is_kept(stack, change, field):
    path = "/v1/chat/completions/edited"
    assert stack.post(_body("first"), path).status_code == 200
    entry = read_json(stack.config_path.parent / "conversations.json")["stateful"]["edited"]
    edited = {**entry, **change}
    _hand_edit(stack, "edited", edited)
    response = stack.post(_body("second"), path)
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "conversations_unavailable" and field in error["message"] and "edited" in error["message"]
    deleted = requests.delete(stack.url + path, headers=stack.headers(), timeout=30)
    assert deleted.status_code == 503 and deleted.json()["error"]["code"] == "conversations_unavailable"
    # Nothing lost: the entry is still there as the person wrote it, and other conversations work.
    assert read_json(stack.config_path.parent / "conversations.json")["stateful"]["edited"] == edited
    assert stack.post(_body("other"), "/v1/chat/completions/other").status_code == 200
    assert "Traceback" not in stack.server_log.read_text()


@pytest.mark.parametrize("entry", ["cnndivilnl96vah411dg", None, [], {"account": "acct0"}])
def test_a_hand_written_entry_of_the_wrong_shape_is_a_503_not_a_new_chat(stack, entry):
    _hand_edit(stack, "shaped", entry)
    response = stack.post(_body("x"), "/v1/chat/completions/shaped")
    assert response.status_code == 503 and response.json()["error"]["code"] == "conversations_unavailable"
    assert stack.emulator.stats()["chats_created"] == 0
    assert read_json(stack.config_path.parent / "conversations.json")["stateful"]["shaped"] == entry


def test_a_hand_edited_native_conversation_entry_is_a_503(stack):
    chat_id = stack.post(_body("x", conversation_id="none")).json()["id"]
    path = stack.config_path.parent / "conversations.json"
    doc = read_json(path)
    doc["chats"][chat_id]["protocol"] = "smoke-signals"
    write_json(path, doc)
    response = stack.post(_body("y", conversation_id=chat_id))
    assert response.status_code == 503 and response.json()["error"]["code"] == "conversations_unavailable"
    assert "protocol" in response.json()["error"]["message"]



def test_a_turn_given_up_while_queued_never_leaves_its_conversation_locked():
    import asyncio

    from server.core.conversation_lock import _acquire

    async def scenario() -> None:
        lock = asyncio.Lock()
        await lock.acquire()
        assert not await _acquire(lock, 0.01)   # the wait ran out while the turn before still held it
        queued = asyncio.ensure_future(_acquire(lock, 3600))
        await asyncio.sleep(0)
        queued.cancel()                           # e.g. the server stopping
        lock.release()
        await asyncio.gather(queued, return_exceptions=True)
        for _ in range(3):
            await asyncio.sleep(0)
        assert not lock.locked()
        assert await _acquire(lock, 1)
    asyncio.run(scenario())


def test_a_conversation_whose_account_left_the_config_says_so_at_once(stack):
    path = "/v1/chat/completions/moved"
    assert stack.post(_body("first"), path).status_code == 200
    entry = read_json(stack.config_path.parent / "conversations.json")["stateful"]["moved"]
    _hand_edit(stack, "moved", {**entry, "account": "renamed-away"})
    response = stack.post(_body("second"), path)
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "conversations_unavailable" and "renamed-away" in error["message"]
    assert stack.emulator.stats()["chats_created"] == 1


def test_a_stream_whose_conversation_cannot_be_recorded_ends_with_an_error_frame(tmp_path):
    # Over Connect the chat is recorded when the answer ends (REST records it at creation, before any byte):
    # the head and frames are out when the conversations file breaks, so the client gets an error frame and
    # the end of the response, not a connection left open for ever.
    stack = Stack(tmp_path, protocol="connect")
    try:
        stack.emulator.admin("stream", {"stall_after": 1, "stall_seconds": 3600})
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(requests.post, stack.url + "/v1/chat/completions/c-broken",
                               json=_body("hello", stream=True), headers=stack.headers(), timeout=120)
            wait_until(lambda: stack.emulator.stats()["paused"] >= 1, 60, "the answer to be held mid-stream")
            (stack.config_path.parent / "conversations.json").write_text("{broken")
            stack.emulator.admin("stream", {"stall_after": None})
            stack.emulator.admin("release")
            response = held.result()
        assert response.status_code == 200
        frames = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert frames and frames[-1] != "[DONE]"
        assert '"conversations_unavailable"' in frames[-1] and frames[-1].startswith('{"error"')
    finally:
        stack.close()
