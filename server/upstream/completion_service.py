"""One answer from Kimi: pick an account and its protocol, start the turn (with failover), clean up after."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from common.config import Account
from common.redact import fingerprint
from server.core.errors import UNAVAILABLE, Failure
from server.upstream.accounts import AccountPool
from server.upstream.errors import UpstreamAuthRejected, UpstreamError
from server.upstream.turn import ChatTarget, Turn, TurnRequest

log = logging.getLogger("server.completion")

# Chats are deleted by a few workers from a queue, not all at once: answers end in bursts, and a
# burst of deletions would queue at Kimi ahead of the next answers' create-chat calls. When
# deletions fall behind the answers, more workers join, so the queue cannot grow without end.
CLEANUP_WORKERS = 4
CLEANUP_WORKERS_MAX = 64
QUEUED_PER_WORKER = 16           # past 4 workers, one more for every 16 chats waiting
MAX_PENDING_DELETIONS = 10_000   # beyond this (Kimi not answering deletions) the oldest are given up


class CompletionService:
    """Failover between accounts before the first byte; chat deletion off the critical path."""

    def __init__(self, protocols: dict, pool: AccountPool, max_attempts: int, refresh_wait: float) -> None:
        self.protocols, self.pool = protocols, pool
        self.max_attempts, self.refresh_wait = max_attempts, refresh_wait
        self._doomed: deque[tuple[str, Account, str]] = deque()
        self._cleaners: set[asyncio.Task] = set()
        self.deletions_given_up = 0

    def protocol_for(self, account: Account, target: ChatTarget):
        return self.protocols[target.protocol or self.pool.protocol_of(account)]

    async def open(self, target: ChatTarget, request: TurnRequest) -> Turn:
        """Start the answer, failing over between accounts; raise a Failure if none works."""
        tried: set[str] = set()
        last_error: UpstreamError | None = None
        waited = False
        for _ in range(self.max_attempts):
            account = self.pool.pick(tried, target.account)
            if account is None and not waited:
                # Every token is spent or refused: a running refresher can mend that within seconds;
                # without one (no fresh heartbeat) nobody will, so answer the 503 at once.
                waited = True
                if await self.pool.request_refresh_of_stale() and await self.pool.refresher_alive():
                    account = await self.pool.wait_for_account(tried, self.refresh_wait, target.account)
            if account is None:
                break
            try:
                return await self.protocol_for(account, target).start(account, target, request)
            except UpstreamAuthRejected as exc:
                # This token is done; a transient fault below may be retried on the same account.
                tried.add(fingerprint(account.access_token))
                last_error = exc
                await self.pool.report_rejected(account)
            except UpstreamError as exc:
                last_error = exc
                log.warning("account %r: %s", account.name, exc)
                if not exc.retryable:
                    break
        if last_error is not None:
            raise last_error.to_failure()
        raise Failure(UNAVAILABLE, "No Kimi account is usable right now: every account needs a new login or a token "
                      "refresh. Check the refresher's log.", code="no_available_account",
                      retry_after=30)

    async def broke(self, turn: Turn, error: UpstreamError) -> None:
        """An answer failed after it started: a token Kimi refused mid-answer goes to the refresher too."""
        if isinstance(error, UpstreamAuthRejected):
            await self.pool.report_rejected(turn.account)

    def dispose(self, turn: Turn) -> None:
        """Close the upstream stream; delete the chat in the background unless it is kept."""
        turn.close()
        if not turn.keep and turn.chat_id:
            if len(self._doomed) >= MAX_PENDING_DELETIONS:
                _, account, chat_id = self._doomed.popleft()
                self.deletions_given_up += 1
                if self.deletions_given_up % 1000 == 1:
                    log.warning("Kimi is not keeping up with chat deletions: gave up deleting %d chat(s) so far, "
                                "latest %s of account %r", self.deletions_given_up, chat_id, account.name)
            self._doomed.append((turn.protocol, turn.account, turn.chat_id))
            wanted = min(CLEANUP_WORKERS_MAX, max(CLEANUP_WORKERS, len(self._doomed) // QUEUED_PER_WORKER))
            while len(self._cleaners) < wanted:
                task = asyncio.ensure_future(self._clean())
                self._cleaners.add(task)
                task.add_done_callback(self._cleaners.discard)

    @property
    def pending_deletions(self) -> int:
        """Chats waiting for a deletion worker."""
        return len(self._doomed)

    async def _clean(self) -> None:
        while self._doomed:
            protocol, account, chat_id = self._doomed.popleft()
            await self.protocols[protocol].delete_chat_quietly(account, chat_id)

    async def drain(self) -> None:
        """Wait for pending chat deletions (at shutdown)."""
        while self._cleaners:
            await asyncio.gather(*self._cleaners, return_exceptions=True)
