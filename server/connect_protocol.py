"""Kimi's Connect RPC protocol as turns: framed Chat stream, op/mask events, DeleteChat (kimi-protocol.md §3)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import orjson

from common.config import Account
from common.connect_frames import END_STREAM, FrameError, FrameParser, encode
from server.errors import (ApiError, UpstreamAuthRejected, UpstreamChatGone, UpstreamError, UpstreamOverloaded,
                           UpstreamPaywall, UpstreamRefused, UpstreamStreamError, UpstreamThrottled, UpstreamTimeout)
from server.upstream_http import HttpResponse
from server.kimi_client import FLUSH, KimiClient, json_or_none, paced_chunks
from server.catalog_cache import ModelCatalogs
from server.model_catalog import FALLBACK, CatalogModel
from server.turn import FLUSH_PIECE, ChatTarget, Piece, Protocol, SourceLines, Turn, TurnRequest

CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
DELETE_PATH = "/apiv2/kimi.chat.v1.ChatService/DeleteChat"   # note: no "gateway" (kimi-protocol.md §3.1)


class ConnectProtocol(Protocol):
    """Starts Connect turns and deletes Connect chats."""

    name = "connect"

    def __init__(self, kimi: KimiClient, keepalive: float, catalogs: ModelCatalogs | None = None) -> None:
        self.kimi, self.keepalive, self.catalogs = kimi, keepalive, catalogs

    def headers(self, access_token: str, content_type: str, referer: str = "/") -> dict:
        return {**self.kimi.headers(access_token, referer), "Content-Type": content_type,
                "Connect-Protocol-Version": "1"}

    async def start(self, account: Account, target: ChatTarget, request: TurnRequest) -> ConnectTurn:
        _refuse_unsupported(request)
        model = self.catalogs.model_for(account, request.choice.catalog_id) if self.catalogs else None
        body = chat_request(request, target, model)
        referer = f"/chat/{target.chat_id}" if target.chat_id else "/?chat_enter_method=new_chat"
        response = await self.kimi.open_stream(
            self.kimi.base_url + CHAT_PATH, self.headers(account.access_token, "application/connect+json", referer),
            encode(body), self.kimi.timeouts.idle, "the Chat request")
        if response.status != 200 or "application/connect+json" not in response.headers.get("content-type", ""):
            raise unary_error(response.status, await self.kimi.refusal_body(response), "Chat")
        turn = ConnectTurn(account, target, response, self.keepalive, self.kimi.timeouts.idle)
        try:
            # The chat id comes first: wait for it, so a fresh chat is known (and deletable) from the start.
            await turn.read_until_chat()
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
    if request.blobs:
        missing.append("images and files")
    if missing:
        raise ApiError(400, f"{', '.join(missing).capitalize()} are served over Kimi's REST protocol only; this "
                       "account uses Connect. Give it a refresh token, or set its \"protocol\" to \"rest\".",
                       param="model", code="unsupported_over_connect")


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
                 idle: float) -> None:
        super().__init__(account, target.chat_id or "", target.keep)
        self._response, self._keepalive, self._idle = response, keepalive, idle
        self._parser = FrameParser()
        self._early: list[tuple[int, dict]] = []
        self._seen: set[bytes] = set()
        self._frames = self._read_frames()

    def close(self) -> None:
        if self.complete:
            self._response.close_when_done()
        else:
            self._response.close()

    async def read_until_chat(self) -> None:
        async for item in self._frames:
            if item is None or item is FLUSH:
                continue
            self._early.append(item)
            flags, message = item
            if flags & END_STREAM:
                _raise_end_stream(message)
                raise UpstreamStreamError("Kimi ended the Chat stream before it began")
            if isinstance(message.get("error"), dict):
                raise connect_error(message["error"])
            chat = message.get("chat")
            if isinstance(chat, dict) and isinstance(chat.get("id"), str) and chat["id"]:
                self.chat_id = self.chat_id or chat["id"]
                return
        raise UpstreamError("Kimi's Chat stream ended before naming the chat")

    async def _read_frames(self) -> AsyncIterator[tuple[int, dict] | dict | None]:
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
        raise UpstreamError("Kimi's Chat stream ended without its end-of-stream frame")

    async def _all_frames(self) -> AsyncIterator[tuple[int, dict] | dict | None]:
        early, self._early = self._early, []
        for item in early:
            yield item
        async for item in self._frames:
            yield item

    async def pieces(self, render_search: bool) -> AsyncIterator[Piece]:
        produced, sources = False, SourceLines()
        async for item in self._all_frames():
            if item is None:
                yield Piece("keepalive")
                continue
            if item is FLUSH:
                yield FLUSH_PIECE
                continue
            flags, message = item
            if flags & END_STREAM:
                _raise_end_stream(message)
                if not produced:
                    raise UpstreamStreamError("Kimi returned an empty answer")
                self.complete = True
                yield Piece("finish", "stop")
                return
            if isinstance(message.get("error"), dict):
                raise connect_error(message["error"])
            assistant = message.get("message")
            if isinstance(assistant, dict) and assistant.get("role") == "assistant" and assistant.get("id"):
                self.parent_id = assistant["id"]
            block = message.get("block")
            if not isinstance(block, dict):
                continue
            masks = set(str(message.get("mask") or "").split(","))
            text = (block.get("text") or {}).get("content") if isinstance(block.get("text"), dict) else None
            think = (block.get("think") or {}).get("content") if isinstance(block.get("think"), dict) else None
            if masks & {"block.text", "block.text.content"} and isinstance(text, str) and text:
                if gap := sources.separator():
                    yield Piece("content", gap)
                produced = True
                yield Piece("content", text)
            elif masks & {"block.think", "block.think.content"} and isinstance(think, str) and think:
                produced = True
                yield Piece("reasoning", think)
            elif isinstance(block.get("exception"), dict):
                raise _block_exception(block["exception"])
            elif "block.tool.contents" in masks and render_search and isinstance(block.get("tool"), dict):
                for content in block["tool"].get("contents") or []:
                    base = ((content or {}).get("searchResult") or {}).get("base") if isinstance(content, dict) else None
                    if isinstance(base, dict):
                        yield Piece("content", sources.line(str(base.get("title") or ""), str(base.get("url") or ""),
                                                            str(base.get("siteName") or "")))
        raise UpstreamError("Kimi's Chat stream ended without its end-of-stream frame")


def _raise_end_stream(message: dict) -> None:
    if isinstance(message.get("error"), dict):
        raise connect_error(message["error"])


def _block_exception(exception: dict) -> UpstreamError:
    error = exception.get("error") if isinstance(exception.get("error"), dict) else exception
    reason = str(error.get("reason") or "")
    if "OVERLOADED" in reason:
        return UpstreamOverloaded(reason)
    return UpstreamStreamError(f"Kimi stopped the answer ({reason or 'block exception'})")


def connect_error(error: dict, http_status: int = 200) -> UpstreamError:
    """Map a Connect error (`code`, `details[].debug.paywall`) onto our upstream errors."""
    code = str(error.get("code") or "unknown")
    label = f"Connect {code}" + (f" (HTTP {http_status})" if http_status != 200 else "")
    details = error.get("details") if isinstance(error.get("details"), list) else []
    paywall = any(isinstance(d, dict) and isinstance(d.get("debug"), dict) and d["debug"].get("paywall")
                  for d in details)
    if code == "unauthenticated":
        return UpstreamAuthRejected(label)
    if code == "resource_exhausted":
        return UpstreamPaywall(label) if paywall else UpstreamThrottled(label, 30)
    if code.upper() == "MODEL_RATE_LIMIT":
        return UpstreamThrottled(label, 30)
    if code == "not_found":
        return UpstreamChatGone(label)
    if code in ("permission_denied", "invalid_argument", "failed_precondition", "unimplemented"):
        return UpstreamRefused(label)
    if code == "deadline_exceeded":
        return UpstreamTimeout(label)
    return UpstreamError(label)   # unavailable, internal, unknown: worth another attempt


def unary_error(status: int, raw: bytes, what: str) -> UpstreamError:
    """A non-200 Connect answer: `{"code", "message"}` when Kimi sent one, else by status."""
    data = json_or_none(raw)
    if isinstance(data, dict) and isinstance(data.get("code"), str):
        return connect_error(data, status)
    if status in (401, 403):
        return UpstreamAuthRejected(f"{what}: HTTP {status}")
    if status == 429:
        return UpstreamThrottled(f"{what}: HTTP 429", 30)
    if status >= 500:
        return UpstreamError(f"{what}: HTTP {status}")
    return UpstreamRefused(f"{what}: HTTP {status}")
