"""POST /v1/chat/completions: validate, open Kimi's answer, then stream it or return it whole."""

from __future__ import annotations

import logging

import tornado.iostream

from server import openai_format
from server.base import ApiHandler
from common.config import Account
from server.attachments import load
from server.completion_service import ChatTarget, Session
from server.errors import ApiError, UpstreamError
from server.kimi_client import CHAT_ID, KimiClient
from server.kimi_files import refs_file_entry, upload
from server.kimi_request import completion_body
from server.models import ModelChoice, resolve_model
from server.prompt import fold_messages, newest_user_text
from server.schema import ChatRequest, parse_chat_request
from server.usage import usage

log = logging.getLogger("server.chat")


class TurnPlan:
    """Where a turn goes, what text it sends, and what to do once Kimi has accepted it."""

    def __init__(self, target: ChatTarget, prompt: str, on_open=None, reply_id: str | None = None) -> None:
        self.target, self.prompt, self._on_open, self._reply_id = target, prompt, on_open, reply_id

    async def opened(self, session: Session) -> str | None:
        """Record the chat (for conversations); return the response id to use, if not a fresh one."""
        result = await self._on_open(session) if self._on_open else None
        return self._reply_id or (result if isinstance(result, str) else None)


class ChatCompletionsHandler(ApiHandler):
    """The OpenAI chat-completions endpoint."""

    def initialize(self, services) -> None:
        super().initialize(services)
        self._session: Session | None = None
        self._client_gone = False

    def on_connection_close(self) -> None:
        # The caller hung up: close the upstream request at once rather than let it run on.
        self._client_gone = True
        if self._session is not None:
            self._session.stream.close()

    async def post(self, caller_id: str | None = None) -> None:
        request = parse_chat_request(self.json_body())
        choice = resolve_model(request.model)
        plan = await self._plan(request, choice, caller_id)
        services = self.services
        kimi = services.kimi
        # Decode and download before touching Kimi: a bad file fails fast, on no account.
        blobs = [await load(a, services.fetcher, services.max_file_bytes)
                 for a in _attachments(request.messages, continuing=plan.target.chat_id is not None)]

        async def build_body(account: Account, chat_id: str) -> dict:
            if choice.research:
                await _check_research_quota(kimi, account)
            records = [await upload(kimi, account.access_token, chat_id, blob, services.parse_timeout)
                       for blob in blobs]
            return completion_body(plan.prompt, choice, request.use_search, [r["id"] for r in records],
                                   [refs_file_entry(r) for r in records])

        service = self.services.completions
        try:
            self._session = await service.open(plan.target, build_body)
        except ApiError as exc:
            if exc.code == "conversation_not_found" and caller_id:
                await self.services.conversations.forget(caller_id)
            raise
        try:
            completion_id = await plan.opened(self._session)
            if self._client_gone:
                return
            if request.stream:
                await self._stream(self._session, choice, plan.prompt, request.include_usage, completion_id)
            else:
                await self._whole(self._session, choice, plan.prompt, completion_id)
        finally:
            service.dispose(self._session)

    async def _plan(self, request: ChatRequest, choice: ModelChoice, caller_id: str | None) -> TurnPlan:
        conversations = self.services.conversations
        folded = fold_messages(request.messages)
        if caller_id is not None:
            entry = await conversations.lookup(caller_id)
            if entry is not None:
                return TurnPlan(ChatTarget(choice.agent_id, entry["account"], entry["chat_id"], keep=True),
                                newest_user_text(request.messages))

            async def bind(session: Session) -> None:
                await conversations.bind(caller_id, session.chat_id, session.account.name)
            return TurnPlan(ChatTarget(choice.agent_id, keep=True), folded, bind)
        if request.conversation_id is not None:
            chat_id = request.conversation_id.strip().lower()
            if CHAT_ID.match(chat_id):
                owner = await conversations.owner_of(chat_id)
                if owner is None:
                    raise ApiError(404, f"Unknown conversation_id '{request.conversation_id}': pass the id a "
                                   "previous answer returned, or leave it out to start one.",
                                   param="conversation_id", code="conversation_not_found")
                return TurnPlan(ChatTarget(choice.agent_id, owner, chat_id, keep=True),
                                newest_user_text(request.messages), reply_id=chat_id)

            async def remember(session: Session) -> str:
                await conversations.remember_chat(session.chat_id, session.account.name)
                return session.chat_id
            return TurnPlan(ChatTarget(choice.agent_id, keep=True), folded, remember)
        return TurnPlan(ChatTarget(choice.agent_id), folded)

    async def delete(self, caller_id: str | None = None) -> None:
        """Forget a stateful conversation and delete its Kimi chat."""
        if caller_id is None:
            raise ApiError(405, "DELETE needs a conversation id: /v1/chat/completions/{id}.", code="method_not_allowed")
        entry = await self.services.conversations.forget(caller_id)
        if entry is None:
            raise ApiError(404, f"No conversation '{caller_id}'.", code="conversation_not_found")
        account = self.services.config().account(entry["account"])
        upstream_deleted = False
        if account is not None:
            try:
                await self.services.kimi.delete_chat(account.access_token, entry["chat_id"])
                upstream_deleted = True
            except UpstreamError as exc:
                log.info("conversation %r forgotten; deleting its Kimi chat failed: %s", caller_id, exc)
        self.send_json({"id": caller_id, "object": "conversation.deleted", "deleted": True,
                        "upstream_deleted": upstream_deleted})

    async def _whole(self, session: Session, choice: ModelChoice, prompt: str, completion_id: str | None) -> None:
        content, reasoning, finish = [], [], "stop"
        try:
            async for piece in self.services.completions.pieces(session, render_search=not choice.silent):
                if piece.kind == "content":
                    content.append(piece.text)
                elif piece.kind == "reasoning":
                    reasoning.append(piece.text)
                elif piece.kind == "finish":
                    finish = piece.text
        except UpstreamError as exc:
            raise exc.to_api_error() from None
        text, thought = "".join(content), "".join(reasoning)
        self.send_json(openai_format.completion_body(choice.requested, text, thought, finish,
                                                     usage(prompt, text, thought), completion_id))

    async def _stream(self, session: Session, choice: ModelChoice, prompt: str, include_usage: bool,
                      completion_id: str | None) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        chunks = openai_format.ChunkFactory(choice.requested, include_usage, completion_id)
        content, reasoning = [], []
        try:
            await self._send(chunks.role())
            async for piece in self.services.completions.pieces(session, render_search=not choice.silent):
                if piece.kind == "content":
                    content.append(piece.text)
                    await self._send(chunks.delta({"content": piece.text}))
                elif piece.kind == "reasoning":
                    reasoning.append(piece.text)
                    await self._send(chunks.delta({"reasoning_content": piece.text}))
                elif piece.kind == "keepalive":
                    await self._send(openai_format.KEEPALIVE)
                elif piece.kind == "finish":
                    await self._send(chunks.delta({}, finish_reason=piece.text))
            if include_usage:
                await self._send(chunks.usage(usage(prompt, "".join(content), "".join(reasoning))))
            await self._send(openai_format.DONE)
        except tornado.iostream.StreamClosedError:
            return
        except UpstreamError as exc:
            if self._client_gone:
                return
            # Headers are out: the error goes in a frame, and no [DONE] follows a broken answer.
            log.warning("stream failed after it started: %s", exc)
            await self._send(openai_format.error_frame(exc.to_api_error().body()), swallow=True)
        self.finish()

    async def _send(self, frame: bytes, swallow: bool = False) -> None:
        self.write(frame)
        try:
            await self.flush()
        except tornado.iostream.StreamClosedError:
            self._client_gone = True
            if not swallow:
                raise
            return
        if self._client_gone and not swallow:
            raise tornado.iostream.StreamClosedError()

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError) or not self._headers_written:
            super().write_error(status_code, **kwargs)


def _attachments(messages: list[dict], continuing: bool) -> list:
    """Every user attachment for a new chat; only the newest user message's when Kimi keeps the history."""
    users = [m for m in messages if m["role"] == "user"]
    if continuing:
        users = users[-1:]
    return [a for m in users for a in m["attachments"]]


async def _check_research_quota(kimi: KimiClient, account: Account) -> None:
    """Research mode is metered by Kimi; refuse up front rather than fail mid-answer."""
    usage_now = await kimi.research_usage(account.access_token)
    remain, total, used = usage_now.get("remain"), usage_now.get("total"), usage_now.get("used")
    exhausted = (isinstance(remain, int) and remain <= 0) or (
        isinstance(total, int) and isinstance(used, int) and used >= total)
    if exhausted:
        raise ApiError(429, f"Kimi's research mode quota is used up for now ({used} of {total} used). "
                       "Use another model or try again later.", type="rate_limit_exceeded",
                       code="research_quota_exhausted", headers={"Retry-After": "3600"})
