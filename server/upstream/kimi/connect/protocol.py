"""Kimi's Connect RPC protocol as turns: framed Chat stream, op/mask events, DeleteChat (kimi-protocol.md §3)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator

import orjson

from common.config import Account
from common.connect_frames import END_STREAM, FrameError, FrameParser, encode
from server.core.errors import BAD_REQUEST, Failure
from server.core.events import Event, Finish, ReasoningDelta, Source, TextDelta
from server.core.model_catalog import FALLBACK, CatalogModel
from server.upstream.catalog_cache import ModelCatalogs
from server.upstream.errors import UpstreamError, UpstreamStreamError
from server.upstream.http import HttpResponse
from server.upstream.kimi.client import FLUSH, KimiClient, paced_chunks
from server.upstream.kimi.connect.errors import connect_error, raise_end_stream, unary_error
from server.upstream.kimi.connect.events import ChatEvents, ModelDegrades
from server.upstream.kimi.files import file_block, upload_over_connect
from server.upstream.turn import ChatTarget, Protocol, Turn, TurnRequest

CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
DELETE_PATH = "/apiv2/kimi.chat.v1.ChatService/DeleteChat"   # note: no "gateway" (kimi-protocol.md §3.1)


class ConnectProtocol(Protocol):
    """Starts Connect turns and deletes Connect chats."""

    name = "connect"

    def __init__(self, kimi: KimiClient, keepalive: float, catalogs: ModelCatalogs | None = None,
                 parse_timeout: float = 120.0) -> None:
        self.kimi, self.keepalive, self.catalogs, self.parse_timeout = kimi, keepalive, catalogs, parse_timeout
        self.degrades = ModelDegrades()

    def headers(self, access_token: str, content_type: str, referer: str = "/") -> dict:
        return {**self.kimi.headers(access_token, referer), "Content-Type": content_type,
                "Connect-Protocol-Version": "1"}

    async def start(self, account: Account, target: ChatTarget, request: TurnRequest) -> ConnectTurn:
        _refuse_unsupported(request)
        model = self.catalogs.model_for(account, request.choice.catalog_id) if self.catalogs else None
        body = chat_request(request, target, model)
        # Files go up first (they belong to the account, not to a chat), then ride in the message as blocks.
        for blob in request.blobs:
            record = await upload_over_connect(self.kimi, account.access_token, blob, self.parse_timeout)
            body["message"]["blocks"].append(file_block(record))
        referer = f"/chat/{target.chat_id}" if target.chat_id else "/?chat_enter_method=new_chat"
        response = await self.kimi.open_stream(
            self.kimi.base_url + CHAT_PATH, self.headers(account.access_token, "application/connect+json", referer),
            encode(body), self.kimi.timeouts.idle, "the Chat request")
        if response.status != 200 or "application/connect+json" not in response.headers.get("content-type", ""):
            raise unary_error(response.status, await self.kimi.refusal_body(response), "Chat")
        choice = request.choice
        events = ChatEvents(account, (choice.search or request.use_search) and not choice.silent, self.degrades)
        turn = ConnectTurn(account, target, response, self.keepalive, self.kimi.timeouts.idle, events)
        try:
            # Read up to the first answer piece (or a keepalive's worth of silence): an error Kimi sends before
            # it answers (an overloaded free account, say) is still an HTTP status the caller can act on.
            await turn.peek()
        except Exception:
            turn.close()
            if turn.chat_id and not target.chat_id:   # a chat Kimi made for an answer that never came
                await self.delete_chat_quietly(account, turn.chat_id)
            raise
        except BaseException:
            turn.close()
            raise
        return turn

    async def delete_chat(self, account: Account, chat_id: str) -> None:
        response = await self.kimi.fetch(self.kimi.base_url + DELETE_PATH, "POST",
                                         self.headers(account.access_token, "application/json"),
                                         orjson.dumps({"chat_id": chat_id}), "DeleteChat")
        if response.code != 200:
            raise unary_error(response.code, response.body or b"", "DeleteChat")


def _refuse_unsupported(request: TurnRequest) -> None:
    choice, missing = request.choice, []
    if choice.research:
        missing.append("research mode")
    if choice.math:
        missing.append("math mode")
    if missing:
        raise Failure(BAD_REQUEST, f"{', '.join(missing).capitalize()} are served over Kimi's REST protocol only; this "
                      "account uses Connect. Where Kimi still serves REST, set the account's (or upstream's) "
                      "\"protocol\" to \"rest\".",
                      field="model", code="unsupported_over_connect")


def chat_request(request: TurnRequest, target: ChatTarget, model: CatalogModel | None = None) -> dict:
    """The Chat RPC's message for `model` (the account's catalog entry; the fallback's default when None).

    The model gives the scenario, kimiplusId + agentMode (OK Computer) and the thinking flag; a legacy
    name's flags add thinking and search; a kimi+ agent id goes as kimiplusId. Continuation ids are
    omitted, not sent empty (kimi-protocol.md §3.4)."""
    model = model or FALLBACK.default
    choice = request.choice
    message = {"role": "user", "blocks": [{"message_id": "", "text": {"content": request.prompt}}],
               "scenario": model.scenario}
    options = {"thinking": model.thinking if choice.catalog_id else choice.thinking or model.thinking}
    if effort := model.effort(choice.effort):
        options["reasoningEffort"] = effort
    body = {"scenario": model.scenario, "tools": [], "message": message, "options": options}
    kimiplus_id = choice.agent_id if choice.agent_id != "kimi" else model.kimiplus_id
    if kimiplus_id:
        body["kimiplusId"] = kimiplus_id
    if model.agent_mode:
        body["agentMode"] = model.agent_mode
    if choice.search or request.use_search:
        body["tools"] = [{"type": "TOOL_TYPE_SEARCH", "search": {}}]
    if target.chat_id:
        body["chat_id"] = target.chat_id
        if target.parent_id:
            message["parent_id"] = target.parent_id
    return body


class ConnectTurn(Turn):
    """A Chat stream read frame by frame: text to content, think to reasoning, errors even after done."""

    protocol = "connect"

    def __init__(self, account: Account, target: ChatTarget, response: HttpResponse, keepalive: float,
                 idle: float, events: ChatEvents) -> None:
        super().__init__(account, target.chat_id or "", target.keep)
        self._response, self._keepalive, self._idle, self._events = response, keepalive, idle, events
        self._parser = FrameParser()
        self._early: list[list[Event]] = []
        self._seen: set[bytes] = set()
        self._batches = self._translate()

    def close(self) -> None:
        if self.complete:
            self._response.close_when_done()
        else:
            self._response.close()

    async def peek(self) -> None:
        """Hold batches until the chat is named and the answer (or its end) begins, or for a keepalive's time."""
        deadline = time.monotonic() + self._keepalive
        async for batch in self._batches:
            self._early.append(batch)
            if not self.chat_id:
                continue
            if not batch or time.monotonic() >= deadline or any(
                    isinstance(e, (TextDelta, ReasoningDelta, Source, Finish)) for e in batch):
                return

    async def events(self) -> AsyncIterator[list[Event]]:
        """The answer; whether sources show was settled at start from the same request (searching)."""
        early, self._early = self._early, []
        for batch in early:
            yield batch
        async for batch in self._batches:
            yield batch

    async def _translate(self) -> AsyncIterator[list[Event]]:
        """Frames to batches: turn state (chat id, answer id) here, the answer's content by ChatEvents."""
        batch: list[Event] = []
        try:
            async for item in self._frames():
                if item is None:
                    yield []
                elif item is FLUSH:
                    if batch:
                        yield batch
                        batch = []
                elif self._frame(item, batch):
                    yield batch
                    return
        except UpstreamError:
            if batch:
                yield batch   # what came before the error in the same read is the answer as far as it got
            raise
        raise UpstreamError("Kimi's Chat stream ended without its end-of-stream frame")

    def _frame(self, item: tuple[int, dict], batch: list[Event]) -> bool:
        """One frame's events into `batch`; True at the end of the stream (a Finish is then the last event)."""
        flags, message = item
        events = self._events
        if flags & END_STREAM:
            raise_end_stream(message)
            if not self.chat_id:
                raise UpstreamStreamError("Kimi ended the Chat stream before it began")
            batch.extend(events.end())
            if not events.produced:
                raise UpstreamStreamError("Kimi returned an empty answer")
            self.complete = True
            batch.append(Finish("stop"))
            return True
        if isinstance(message.get("error"), dict):
            raise connect_error(message["error"])
        chat = message.get("chat")
        if isinstance(chat, dict) and isinstance(chat.get("id"), str) and chat["id"]:
            self.chat_id = self.chat_id or chat["id"]
        assistant = message.get("message")
        if isinstance(assistant, dict) and assistant.get("role") == "assistant" and assistant.get("id"):
            self.parent_id = assistant["id"]
        batch.extend(events.feed(message))
        return False

    async def _frames(self) -> AsyncIterator[tuple[int, dict] | dict | None]:
        """(flags, message) per new frame, FLUSH after each read, None after a keepalive's silence."""
        async for chunk in paced_chunks(self._response, self._keepalive, self._idle):
            if chunk is None:
                yield None
                continue
            try:
                frames = self._parser.feed(chunk)
            except FrameError as exc:
                raise UpstreamStreamError(f"Kimi sent a bad Connect frame: {exc}") from None
            for flags, message in frames:
                # Some streams repeat frames verbatim (same eventOffset): count each once.
                key = hashlib.blake2b(orjson.dumps([flags, message], option=orjson.OPT_SORT_KEYS),
                                      digest_size=16).digest()
                if key in self._seen:
                    continue
                self._seen.add(key)
                yield flags, message
            yield FLUSH
