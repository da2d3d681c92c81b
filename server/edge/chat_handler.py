"""POST /v1/chat/completions: validate, open Kimi's answer, then stream it or return it whole."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import tornado.iostream

from server import openai_format
from server.core.attachments import load
from server.edge.base import ApiHandler
from server.errors import ApiError
from server.upstream.errors import UpstreamError
from server.upstream.kimi.client import CHAT_ID
from server.core.models import ModelChoice, resolve_model
from server.prompt import fold_messages, newest_user_text
from server.schema import ChatRequest, parse_chat_request
from server.upstream.turn import ChatTarget, Turn, TurnRequest
from server.core.usage import usage

log = logging.getLogger("server.chat")

Hook = Callable[[Turn], Awaitable[None]]


class TurnPlan:
    """Where a turn goes, what text it sends, and what to record about it for conversations."""

    def __init__(self, target: ChatTarget, prompt: str, record: Hook | None = None,
                 reply_with_chat_id: bool = False) -> None:
        self.target, self.prompt, self.record, self.reply_with_chat_id = target, prompt, record, reply_with_chat_id


class ChatCompletionsHandler(ApiHandler):
    """The OpenAI chat-completions endpoint."""

    def initialize(self, services) -> None:
        super().initialize(services)
        self._turn: Turn | None = None
        self._client_gone = False
        self._plan_record: Hook | None = None

    async def _answered(self, turn: Turn) -> None:
        """Before the last byte goes out: a Connect conversation continues after this answer next time."""
        if self._plan_record and turn.parent_id:
            await self._plan_record(turn)

    def on_connection_close(self) -> None:
        # The caller hung up: close the upstream request at once rather than let it run on.
        self._client_gone = True
        if self._turn is not None:
            self._turn.close()

    async def post(self, caller_id: str | None = None) -> None:
        request = parse_chat_request(self.json_body())
        choice = resolve_model(request.model, self.services.catalogs.listed(), request.reasoning_effort)
        # One turn at a time per conversation, from reading where it lives to recording where it went:
        # two first turns would make two Kimi chats, two later ones two streams Kimi refuses on one chat.
        async with self.services.conversations.turn(_conversation_key(request, caller_id)):
            if not self._client_gone:
                await self._answer(request, choice, caller_id)

    async def _answer(self, request: ChatRequest, choice: ModelChoice, caller_id: str | None) -> None:
        plan = await self._plan(request, choice, caller_id)
        services = self.services
        # Decode and download before touching Kimi: a bad file fails fast, on no account.
        blobs = [await load(a, services.fetcher, services.max_file_bytes)
                 for a in _attachments(request.messages, continuing=plan.target.chat_id is not None)]
        turn_request = TurnRequest(plan.prompt, choice, request.use_search, blobs)
        try:
            self._turn = await services.completions.open(plan.target, turn_request)
        except ApiError as exc:
            if exc.code == "conversation_not_found" and caller_id:
                await services.conversations.forget(caller_id)
            raise
        turn = self._turn
        try:
            if plan.record:
                try:
                    await plan.record(turn)
                except ApiError:
                    # A new chat nobody can find again would stay in the user's Kimi account: delete it.
                    turn.keep = plan.target.chat_id is not None
                    raise
            completion_id = turn.chat_id if plan.reply_with_chat_id else None
            if self._client_gone:
                return
            self._plan_record = plan.record
            if request.stream:
                await self._stream(turn, choice, plan.prompt, request.include_usage, completion_id)
            else:
                await self._whole(turn, choice, plan.prompt, completion_id)
        finally:
            services.completions.dispose(turn)

    async def _plan(self, request: ChatRequest, choice: ModelChoice, caller_id: str | None) -> TurnPlan:
        conversations = self.services.conversations
        folded = fold_messages(request.messages)
        if caller_id is not None:
            entry = await conversations.lookup(caller_id)

            async def bind(turn: Turn) -> None:
                await conversations.bind(caller_id, turn.chat_id, turn.account.name, turn.protocol, turn.parent_id)
            if entry is not None:
                self._check_owner(entry, caller_id)
                return TurnPlan(ChatTarget(choice.agent_id, entry["account"], entry["chat_id"], entry.get("parent_id"),
                                           entry.get("protocol"), keep=True), newest_user_text(request.messages), bind)
            return TurnPlan(ChatTarget(choice.agent_id, keep=True), folded, bind)
        if request.conversation_id is not None:
            chat_id = request.conversation_id.strip().lower()

            async def remember(turn: Turn) -> None:
                await conversations.remember_chat(turn.chat_id, turn.account.name, turn.protocol, turn.parent_id)
            if CHAT_ID.match(chat_id):
                entry = await conversations.chat(chat_id)
                if entry is None:
                    raise ApiError(404, f"Unknown conversation_id '{request.conversation_id}': pass the id a "
                                   "previous answer returned, or leave it out to start one.",
                                   param="conversation_id", code="conversation_not_found")
                self._check_owner(entry, chat_id)
                return TurnPlan(ChatTarget(choice.agent_id, entry["account"], chat_id, entry.get("parent_id"),
                                           entry.get("protocol"), keep=True), newest_user_text(request.messages),
                                remember, reply_with_chat_id=True)
            return TurnPlan(ChatTarget(choice.agent_id, keep=True), folded, remember, reply_with_chat_id=True)
        return TurnPlan(ChatTarget(choice.agent_id), folded)

    def _check_owner(self, entry: dict, name: str) -> None:
        """A 503 at once when the account holding the conversation's chat left config.json (not a wait for it)."""
        if self.services.config().account(entry["account"]) is None:
            raise ApiError(503, f"The conversation '{name}' lives in the Kimi account '{entry['account']}', which is "
                           "no longer in config.json; put that account back to continue it.", type="server_error",
                           code="conversations_unavailable")

    async def delete(self, caller_id: str | None = None) -> None:
        """Forget a stateful conversation and delete its Kimi chat."""
        if caller_id is None:
            raise ApiError(405, "DELETE needs a conversation id: /v1/chat/completions/{id}.", code="method_not_allowed")
        async with self.services.conversations.turn(_conversation_key(None, caller_id)):
            await self._delete(caller_id)

    async def _delete(self, caller_id: str) -> None:
        entry = await self.services.conversations.forget(caller_id)
        if entry is None:
            raise ApiError(404, f"No conversation '{caller_id}'.", code="conversation_not_found")
        account = self.services.config().account(entry["account"])
        upstream_deleted = False
        if account is not None:
            protocol = self.services.completions.protocol_for(account, ChatTarget(protocol=entry.get("protocol")))
            try:
                await protocol.delete_chat(account, entry["chat_id"])
                upstream_deleted = True
            except UpstreamError as exc:
                log.info("conversation %r forgotten; deleting its Kimi chat failed: %s", caller_id, exc)
        self.send_json({"id": caller_id, "object": "conversation.deleted", "deleted": True,
                        "upstream_deleted": upstream_deleted})

    async def _whole(self, turn: Turn, choice: ModelChoice, prompt: str, completion_id: str | None) -> None:
        content, reasoning, finish = [], [], "stop"
        try:
            async for piece in turn.pieces(render_search=not choice.silent):
                if piece.kind == "content":
                    content.append(piece.text)
                elif piece.kind == "reasoning":
                    reasoning.append(piece.text)
                elif piece.kind == "finish":
                    finish = piece.text
        except UpstreamError as exc:
            await self.services.completions.broke(turn, exc)
            raise exc.to_api_error() from None
        text, thought = "".join(content), "".join(reasoning)
        await self._answered(turn)
        self.send_json(openai_format.completion_body(choice.requested, text, thought, finish,
                                                     usage(prompt, text, thought), completion_id))

    async def _stream(self, turn: Turn, choice: ModelChoice, prompt: str, include_usage: bool,
                      completion_id: str | None) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        chunks = openai_format.ChunkFactory(choice.requested, include_usage, completion_id)
        content, reasoning = [], []
        unsent = False
        try:
            await self._send(chunks.role())
            async for piece in turn.pieces(render_search=not choice.silent):
                # Frames are buffered as they are translated and sent at each flush piece: one write per
                # upstream read, however many events it held.
                if piece.kind == "content":
                    content.append(piece.text)
                    self.write(chunks.delta({"content": piece.text}))
                    unsent = True
                elif piece.kind == "reasoning":
                    reasoning.append(piece.text)
                    self.write(chunks.delta({"reasoning_content": piece.text}))
                    unsent = True
                elif piece.kind == "flush":
                    if unsent:
                        await self._flush_out()
                        unsent = False
                elif piece.kind == "keepalive":
                    await self._send(openai_format.KEEPALIVE)
                elif piece.kind == "finish":
                    await self._answered(turn)
                    self.write(chunks.delta({}, finish_reason=piece.text))
            # The last frames leave with the end of the response, in one write.
            if include_usage:
                self.write(chunks.usage(usage(prompt, "".join(content), "".join(reasoning))))
            self.write(openai_format.DONE)
        except tornado.iostream.StreamClosedError:
            return
        except ApiError as exc:
            # Raised after the head went out (the conversation could not be recorded, say): a frame, then the end.
            log.warning("stream failed after it started: %s", exc.message)
            await self._send(openai_format.error_frame(exc.body()), swallow=True)
        except UpstreamError as exc:
            await self.services.completions.broke(turn, exc)
            if self._client_gone:
                return
            # Headers are out: the error goes in a frame, and no [DONE] follows a broken answer.
            log.warning("stream failed after it started: %s", exc)
            await self._send(openai_format.error_frame(exc.to_api_error().body()), swallow=True)
        self.finish()

    async def _send(self, frame: bytes, swallow: bool = False) -> None:
        self.write(frame)
        await self._flush_out(swallow)

    async def _flush_out(self, swallow: bool = False) -> None:
        """Send what is buffered; raise StreamClosedError once the caller is gone (unless told to swallow it)."""
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


def _conversation_key(request: ChatRequest | None, caller_id: str | None) -> str | None:
    """The conversation a turn continues or starts (None for a one-off chat), as a lock name."""
    if caller_id is not None:
        return "stateful:" + caller_id
    chat_id = (request.conversation_id or "").strip().lower() if request is not None else ""
    return "chat:" + chat_id if CHAT_ID.match(chat_id) else None


def _attachments(messages: list[dict], continuing: bool) -> list:
    """Every user attachment for a new chat; only the newest user message's when Kimi keeps the history."""
    users = [m for m in messages if m["role"] == "user"]
    if continuing:
        users = users[-1:]
    return [a for m in users for a in m["attachments"]]
