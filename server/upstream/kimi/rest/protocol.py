"""Kimi's REST protocol as turns: create the chat, upload files, stream, continue past `length`."""

from __future__ import annotations

from collections.abc import AsyncIterator

from common.config import Account
from server.core.errors import RATE_LIMITED, Failure
from server.core.events import Event, Finish, ReasoningDelta, Source, TextDelta
from server.upstream.errors import UpstreamError, UpstreamStreamError
from server.upstream.kimi.client import FLUSH, KimiClient, KimiStream
from server.upstream.kimi.files import refs_file_entry, upload
from server.upstream.kimi.rest.request import completion_body, continuation_body
from server.upstream.turn import ChatTarget, Protocol, Turn, TurnRequest


class RestProtocol(Protocol):
    """Starts REST turns and deletes REST chats."""

    name = "rest"

    def __init__(self, kimi: KimiClient, keepalive: float, max_continuations: int, parse_timeout: float) -> None:
        self.kimi, self.keepalive = kimi, keepalive
        self.max_continuations, self.parse_timeout = max_continuations, parse_timeout

    async def start(self, account: Account, target: ChatTarget, request: TurnRequest) -> RestTurn:
        created = target.chat_id is None
        chat_id = target.chat_id or await self.kimi.create_chat(account.access_token, target.agent_id)
        try:
            if request.choice.research:
                await self._check_research_quota(account)
            records = [await upload(self.kimi, account.access_token, chat_id, blob, self.parse_timeout)
                       for blob in request.blobs]
            body = completion_body(request.prompt, request.choice, request.use_search, [r["id"] for r in records],
                                   [refs_file_entry(r) for r in records])
            stream = await self.kimi.open_completion(account.access_token, chat_id, body)
        except BaseException:
            if created and not target.keep:
                await self.delete_chat_quietly(account, chat_id)
            raise
        return RestTurn(self, account, chat_id, target.keep, stream, body["kimiplus_id"])

    async def _check_research_quota(self, account: Account) -> None:
        """Research mode is metered by Kimi; refuse up front rather than fail mid-answer."""
        now = await self.kimi.research_usage(account.access_token)
        remain, total, used = now.get("remain"), now.get("total"), now.get("used")
        exhausted = (isinstance(remain, int) and remain <= 0) or (
            isinstance(total, int) and isinstance(used, int) and used >= total)
        if exhausted:
            raise Failure(RATE_LIMITED, f"Kimi's research mode quota is used up for now ({used} of {total} used). "
                          "Use another model or try again later.",
                          code="research_quota_exhausted", retry_after=3600)

    async def delete_chat(self, account: Account, chat_id: str) -> None:
        await self.kimi.delete_chat(account.access_token, chat_id)


class RestTurn(Turn):
    """An answer streaming over REST SSE."""

    protocol = "rest"

    def __init__(self, owner: RestProtocol, account: Account, chat_id: str, keep: bool, stream: KimiStream,
                 kimiplus_id: str) -> None:
        super().__init__(account, chat_id, keep)
        self._owner, self._stream, self._kimiplus_id = owner, stream, kimiplus_id

    def close(self) -> None:
        if self.complete:
            self._stream.close_when_done()
        else:
            self._stream.close()

    async def events(self) -> AsyncIterator[list[Event]]:
        """The answer, continued past `length` caps; an empty batch during silence; raise UpstreamError."""
        produced, continuations, batch = False, 0, []
        try:
            while True:
                segment_id, outcome = None, None
                async for event in self._stream.events(self._owner.keepalive):
                    if event is None:
                        yield []
                        continue
                    if event is FLUSH:
                        if batch:
                            yield batch
                            batch = []
                        continue
                    kind, text = event.get("event"), event.get("text")
                    if kind == "req" and isinstance(event.get("id"), str):
                        segment_id = event["id"]
                    elif kind == "cmpl" and isinstance(text, str) and text:
                        produced = True
                        batch.append(TextDelta(text))
                    elif kind == "k1" and isinstance(text, str) and text:
                        produced = True
                        batch.append(ReasoningDelta(text))
                    elif kind == "search_plus" and _is_result(event):
                        msg = event["msg"]
                        batch.append(Source(str(msg.get("title") or ""), str(msg.get("url") or ""),
                                            str(msg.get("site_name") or "")))
                    elif kind == "error":
                        error = event.get("error") if isinstance(event.get("error"), dict) else {}
                        raise UpstreamStreamError(f"Kimi stopped the answer with an error "
                                                  f"({error.get('error_type') or 'unknown'})")
                    elif kind in ("length", "all_done"):
                        outcome = "length" if kind == "length" else "stop"
                        break
                if outcome is None:
                    raise UpstreamStreamError("Kimi's stream ended without all_done")
                if outcome == "length" and segment_id and continuations < self._owner.max_continuations:
                    # Kimi stopped at its output cap: ask it to go on, seamlessly, a bounded number of times.
                    continuations += 1
                    self._stream.close_when_done()
                    self._stream = await self._owner.kimi.open_completion(
                        self.account.access_token, self.chat_id, continuation_body(segment_id, self._kimiplus_id))
                    continue
                if not produced:
                    raise UpstreamStreamError("Kimi returned an empty answer")
                self.complete = True
                batch.append(Finish(outcome))
                yield batch
                return
        except UpstreamError:
            if batch:
                yield batch   # what came before the error in the same read is the answer as far as it got
            raise


def _is_result(event: dict) -> bool:
    msg = event.get("msg")
    return isinstance(msg, dict) and msg.get("type") == "get_res"
