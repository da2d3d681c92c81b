"""One answer from Kimi: pick an account, create the chat, open the stream (with failover), then events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from common.config import Account
from common.redact import fingerprint
from server.accounts import AccountPool
from server.errors import ApiError, UpstreamAuthRejected, UpstreamError, UpstreamStreamError
from server.kimi_client import KimiClient, KimiStream

log = logging.getLogger("server.completion")


@dataclass
class Session:
    """An open upstream answer: which account, which chat, which stream."""

    account: Account
    chat_id: str
    stream: KimiStream


@dataclass(frozen=True)
class Piece:
    """One translated upstream event: kind is content, reasoning, keepalive or finish."""

    kind: str
    text: str = ""


class CompletionService:
    """Turns a folded prompt into a Kimi answer; owns the chat clean-up tasks."""

    def __init__(self, kimi: KimiClient, pool: AccountPool, max_attempts: int, refresh_wait: float,
                 keepalive: float) -> None:
        self.kimi, self.pool = kimi, pool
        self.max_attempts, self.refresh_wait, self.keepalive = max_attempts, refresh_wait, keepalive
        self._cleanups: set[asyncio.Task] = set()

    async def open(self, body: dict) -> Session:
        """Start the answer, failing over between accounts; raise ApiError if none works."""
        tried: set[str] = set()
        last_error: UpstreamError | None = None
        waited = False
        for _ in range(self.max_attempts):
            account = self.pool.pick(tried)
            if account is None and not waited:
                # Every token is spent or refused: the refresher can mend that within seconds.
                waited = True
                if await self.pool.request_refresh_of_stale():
                    account = await self.pool.wait_for_account(tried, self.refresh_wait)
            if account is None:
                break
            try:
                return await self._open_with(account, body)
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
            raise last_error.to_api_error()
        raise ApiError(503, "No Kimi account is usable right now: every account needs a new login or a token "
                       "refresh. Check the refresher's log.", type="server_error", code="no_available_account",
                       headers={"Retry-After": "30"})

    async def _open_with(self, account: Account, body: dict) -> Session:
        chat_id = await self.kimi.create_chat(account.access_token)
        try:
            stream = await self.kimi.open_completion(account.access_token, chat_id, body)
        except BaseException:
            self.dispose_chat(account, chat_id)
            raise
        return Session(account, chat_id, stream)

    async def pieces(self, session: Session) -> AsyncIterator[Piece]:
        """The answer as pieces; keepalives during silence; raise UpstreamError if it breaks."""
        produced = False
        async for event in session.stream.events(self.keepalive):
            if event is None:
                yield Piece("keepalive")
                continue
            kind = event.get("event")
            text = event.get("text")
            if kind == "cmpl" and isinstance(text, str) and text:
                produced = True
                yield Piece("content", text)
            elif kind == "k1" and isinstance(text, str) and text:
                produced = True
                yield Piece("reasoning", text)
            elif kind == "error":
                error = event.get("error") if isinstance(event.get("error"), dict) else {}
                raise UpstreamStreamError(f"Kimi stopped the answer with an error "
                                          f"({error.get('error_type') or 'unknown'})")
            elif kind == "length":
                yield Piece("finish", "length")
                return
            elif kind == "all_done":
                if not produced:
                    raise UpstreamStreamError("Kimi returned an empty answer")
                yield Piece("finish", "stop")
                return
        raise UpstreamStreamError("Kimi's stream ended without all_done")

    def dispose(self, session: Session) -> None:
        session.stream.close()
        self.dispose_chat(session.account, session.chat_id)

    def dispose_chat(self, account: Account, chat_id: str) -> None:
        """Delete the chat in the background (off the answer's critical path)."""
        task = asyncio.ensure_future(self._delete(account, chat_id))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _delete(self, account: Account, chat_id: str) -> None:
        try:
            await self.kimi.delete_chat(account.access_token, chat_id)
        except UpstreamError as exc:
            log.info("could not delete chat %s of account %r: %s", chat_id, account.name, exc)

    async def drain(self) -> None:
        """Wait for pending chat deletions (at shutdown)."""
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)
