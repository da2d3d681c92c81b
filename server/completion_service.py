"""One answer from Kimi: pick an account, get a chat, open the stream (with failover), then its pieces."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from common.config import Account
from common.redact import fingerprint
from server.accounts import AccountPool
from server.errors import ApiError, UpstreamAuthRejected, UpstreamError, UpstreamStreamError
from server.kimi_client import KimiClient, KimiStream
from server.kimi_request import continuation_body

log = logging.getLogger("server.completion")

BodyBuilder = Callable[[Account, str], Awaitable[dict]]


@dataclass(frozen=True)
class ChatTarget:
    """Where the turn goes: a new chat (deleted afterwards unless `keep`), or an existing one."""

    agent_id: str = "kimi"
    account: str | None = None   # an existing chat belongs to this account
    chat_id: str | None = None
    keep: bool = False


@dataclass
class Session:
    """An open upstream answer: which account, which chat, which stream."""

    account: Account
    chat_id: str
    stream: KimiStream
    kimiplus_id: str
    keep: bool


@dataclass(frozen=True)
class Piece:
    """One translated upstream event: kind is content, reasoning, keepalive or finish."""

    kind: str
    text: str = ""


class CompletionService:
    """Turns a Kimi completion body into an answer; owns the chat clean-up tasks."""

    def __init__(self, kimi: KimiClient, pool: AccountPool, max_attempts: int, refresh_wait: float,
                 keepalive: float, max_continuations: int) -> None:
        self.kimi, self.pool = kimi, pool
        self.max_attempts, self.refresh_wait, self.keepalive = max_attempts, refresh_wait, keepalive
        self.max_continuations = max_continuations
        self._cleanups: set[asyncio.Task] = set()

    async def open(self, target: ChatTarget, build_body: BodyBuilder) -> Session:
        """Start the answer, failing over between accounts; raise ApiError if none works."""
        tried: set[str] = set()
        last_error: UpstreamError | None = None
        waited = False
        for _ in range(self.max_attempts):
            account = self.pool.pick(tried, target.account)
            if account is None and not waited:
                # Every token is spent or refused: the refresher can mend that within seconds.
                waited = True
                if await self.pool.request_refresh_of_stale():
                    account = await self.pool.wait_for_account(tried, self.refresh_wait, target.account)
            if account is None:
                break
            try:
                return await self._open_with(account, target, build_body)
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

    async def _open_with(self, account: Account, target: ChatTarget, build_body: BodyBuilder) -> Session:
        created = target.chat_id is None
        chat_id = target.chat_id or await self.kimi.create_chat(account.access_token, target.agent_id)
        try:
            body = await build_body(account, chat_id)
            stream = await self.kimi.open_completion(account.access_token, chat_id, body)
        except BaseException:
            if created and not target.keep:
                self.dispose_chat(account, chat_id)
            raise
        return Session(account, chat_id, stream, body.get("kimiplus_id", "kimi"), target.keep)

    async def pieces(self, session: Session, render_search: bool = True) -> AsyncIterator[Piece]:
        """The answer as pieces, continued past `length` caps; keepalives during silence; raise UpstreamError."""
        produced, sources, separated, continuations = False, 0, False, 0
        while True:
            segment_id, outcome = None, None
            async for event in session.stream.events(self.keepalive):
                if event is None:
                    yield Piece("keepalive")
                    continue
                kind, text = event.get("event"), event.get("text")
                if kind == "req" and isinstance(event.get("id"), str):
                    segment_id = event["id"]
                elif kind == "cmpl" and isinstance(text, str) and text:
                    if sources and not separated:
                        separated = True
                        yield Piece("content", "\n")
                    produced = True
                    yield Piece("content", text)
                elif kind == "k1" and isinstance(text, str) and text:
                    produced = True
                    yield Piece("reasoning", text)
                elif kind == "search_plus" and render_search and (line := _source_line(event, sources + 1)):
                    sources += 1
                    yield Piece("content", ("Sources:\n" if sources == 1 else "") + line)
                elif kind == "error":
                    error = event.get("error") if isinstance(event.get("error"), dict) else {}
                    raise UpstreamStreamError(f"Kimi stopped the answer with an error "
                                              f"({error.get('error_type') or 'unknown'})")
                elif kind in ("length", "all_done"):
                    outcome = "length" if kind == "length" else "stop"
                    break
            if outcome is None:
                raise UpstreamStreamError("Kimi's stream ended without all_done")
            if outcome == "length" and segment_id and continuations < self.max_continuations:
                # Kimi stopped at its output cap: ask it to go on, seamlessly, a bounded number of times.
                continuations += 1
                session.stream.close()
                session.stream = await self.kimi.open_completion(
                    session.account.access_token, session.chat_id, continuation_body(segment_id, session.kimiplus_id))
                continue
            if not produced:
                raise UpstreamStreamError("Kimi returned an empty answer")
            yield Piece("finish", outcome)
            return

    def dispose(self, session: Session) -> None:
        session.stream.close()
        if not session.keep:
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


def _source_line(event: dict, number: int) -> str:
    """A search result as a readable Markdown line; '' for search progress events."""
    msg = event.get("msg") if isinstance(event.get("msg"), dict) else {}
    if msg.get("type") != "get_res":
        return ""
    title = str(msg.get("title") or msg.get("url") or "source").replace("]", ")").replace("[", "(")
    url = str(msg.get("url") or "")
    site = f" ({msg['site_name']})" if msg.get("site_name") else ""
    return f"{number}. [{title}]({url}){site}\n" if url else f"{number}. {title}{site}\n"
