"""Answers to canonical requests: resolve the model, plan the turn, fetch the files, build the prompt, open Kimi."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from common.config import Config
from server.chat.answer import Answer
from server.chat.attachment_loader import load
from server.chat.turn_plan import TurnPlan, conversation_key, plan_turn
from server.core.conversations import Conversations
from server.core.errors import NOT_FOUND, Failure
from server.core.models import ModelChoice, resolve_model
from server.core.request import ChatRequest
from server.emulation.prompt import build_prompt, continued_messages
from server.upstream.catalog_cache import ModelCatalogs
from server.upstream.completion_service import CompletionService
from server.upstream.errors import UpstreamError
from server.upstream.safe_fetch import SafeFetcher
from server.upstream.turn import ChatTarget, TurnRequest

log = logging.getLogger("server.chat")


class ChatService:
    """What every dialect's chat endpoint calls."""

    def __init__(self, completions: CompletionService, conversations: Conversations, catalogs: ModelCatalogs,
                 fetcher: SafeFetcher, max_file_bytes: int, config: Callable[[], Config],
                 keepalive: float) -> None:
        self.completions, self.conversations, self.catalogs = completions, conversations, catalogs
        self.fetcher, self.max_file_bytes, self.config = fetcher, max_file_bytes, config
        self.keepalive = keepalive

    def choose_model(self, request: ChatRequest) -> ModelChoice:
        """The model the request names, with its features; a Failure for an unknown one."""
        return resolve_model(request.model, self.catalogs.listed(), request.reasoning_effort)

    @contextlib.asynccontextmanager
    async def conversation(self, request: ChatRequest | None, caller_id: str | None) -> AsyncIterator[None]:
        """One turn at a time per conversation, from reading where it lives to recording where it went: two first
        turns would make two Kimi chats, two later ones two streams Kimi refuses on one chat."""
        async with self.conversations.turn(conversation_key(request, caller_id)):
            yield

    async def open(self, request: ChatRequest, choice: ModelChoice, caller_id: str | None) -> Answer:
        """Ask Kimi (failing over between accounts before the first byte); the answer is open when this returns."""
        plan = await plan_turn(self.conversations, request, choice, caller_id,
                               lambda name: self.config().account(name) is not None)
        # Decode and download before touching Kimi: a bad file fails fast, on no account.
        blobs = [await load(a, self.fetcher, self.max_file_bytes) for a in _attachments(request, plan)]
        prompt = build_prompt(request, continuing=plan.continuing)
        try:
            turn = await self.completions.open(plan.target, TurnRequest(prompt, choice, request.use_search, blobs))
        except Failure as exc:
            if exc.code == "conversation_not_found" and caller_id:
                await self.conversations.forget(caller_id)
            raise
        if plan.record:
            try:
                await plan.record(turn)
            except BaseException:
                # A new chat nobody can find again would stay in the user's Kimi account: delete it.
                turn.keep = plan.target.chat_id is not None
                self.completions.dispose(turn)
                raise
        return Answer(self.completions, request, choice, plan, prompt, turn, self.keepalive)

    async def forget(self, caller_id: str) -> dict:
        """Forget a stateful conversation and delete its Kimi chat: {"upstream_deleted": bool}."""
        entry = await self.conversations.forget(caller_id)
        if entry is None:
            raise Failure(NOT_FOUND, f"No conversation '{caller_id}'.", code="conversation_not_found")
        account = self.config().account(entry["account"])
        if account is None:
            return {"upstream_deleted": False}
        protocol = self.completions.protocol_for(account, ChatTarget(protocol=entry.get("protocol")))
        try:
            await protocol.delete_chat(account, entry["chat_id"])
        except UpstreamError as exc:
            log.info("conversation %r forgotten; deleting its Kimi chat failed: %s", caller_id, exc)
            return {"upstream_deleted": False}
        return {"upstream_deleted": True}


def _attachments(request: ChatRequest, plan: TurnPlan) -> list:
    """Every user attachment for a new chat; when Kimi keeps the history, those of the messages the prompt sends."""
    messages = continued_messages(request.messages) if plan.continuing else request.messages
    return [a for m in messages if m.role == "user" for a in m.attachments]
