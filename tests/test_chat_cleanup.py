"""Chat deletion after each answer: off the critical path, a few at a time, more when it falls behind, bounded."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import requests

from server.upstream import completion_service
from server.upstream.completion_service import CompletionService
from tests.helpers import Stack, wait_until


def test_deletions_that_fall_behind_get_more_workers_and_all_finish(tmp_path):
    stack = Stack(tmp_path)
    try:
        # Every deletion takes a second: 96 answers at once leave a backlog that 4 workers would take 24 s on.
        stack.emulator.fault("chat_delete", stall=1.0, proceed=True, times=96)
        with ThreadPoolExecutor(48) as pool:
            replies = list(pool.map(lambda i: stack.post(
                {"model": "kimi", "messages": [{"role": "user", "content": f"cleanup {i}"}]}), range(96)))
        assert all(r.status_code == 200 for r in replies)
        wait_until(lambda: stack.emulator.stats()["chats_deleted"] == 96, 60, "every chat to be deleted")
        stats = stack.emulator.stats()
        assert completion_service.CLEANUP_WORKERS < stats["max_stalled"]["chat_delete"] \
            <= completion_service.CLEANUP_WORKERS_MAX, stats["max_stalled"]
        status = requests.get(stack.url + "/v1/status", headers=stack.headers(), timeout=10).json()
        assert status["pending_chat_deletions"] == 0 and status["chat_deletions_given_up"] == 0
    finally:
        stack.close()


class _Turn:
    protocol, keep = "rest", False

    def __init__(self, chat_id: str) -> None:
        self.chat_id, self.account = chat_id, type("Account", (), {"name": "a"})()

    def close(self) -> None:
        pass


class _NeverAnswers:
    async def delete_chat_quietly(self, account, chat_id: str) -> None:
        await asyncio.Event().wait()


def test_a_backlog_kimi_never_clears_is_bounded_and_said_once(monkeypatch, caplog):
    monkeypatch.setattr(completion_service, "MAX_PENDING_DELETIONS", 100)

    async def go() -> tuple[CompletionService, int]:
        service = CompletionService({"rest": _NeverAnswers()}, pool=None, max_attempts=1, refresh_wait=0)
        for i in range(1000):
            service.dispose(_Turn(f"chat{i}"))
        await asyncio.sleep(0)   # the workers start and each takes one chat
        workers = len(service._cleaners)
        for task in list(service._cleaners):
            task.cancel()
        return service, workers
    with caplog.at_level(logging.WARNING, logger="server.completion"):
        service, workers = asyncio.run(go())
    assert service.deletions_given_up == 900
    assert workers == 100 // completion_service.QUEUED_PER_WORKER   # more workers for a longer queue ...
    assert service.pending_deletions == 100 - workers
    assert len([r for r in caplog.records if "gave up deleting" in r.getMessage()]) == 1   # ... and one warning
