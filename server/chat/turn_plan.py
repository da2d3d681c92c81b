"""Where a turn goes: a new chat, a stateful conversation's chat, or a Kimi chat id the caller continues."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from server.core.conversations import Conversations
from server.core.errors import NOT_FOUND, UNAVAILABLE, Failure
from server.core.models import ModelChoice
from server.core.request import ChatRequest
from server.upstream.kimi.client import CHAT_ID
from server.upstream.turn import ChatTarget, Turn

Hook = Callable[[Turn], Awaitable[None]]


class TurnPlan:
    """The target of a turn, whether Kimi already holds the history, and how to record where it went."""

    def __init__(self, target: ChatTarget, record: Hook | None = None, reply_with_chat_id: bool = False) -> None:
        self.target, self.record, self.reply_with_chat_id = target, record, reply_with_chat_id

    @property
    def continuing(self) -> bool:
        """Kimi's chat holds the earlier turns: only what follows its last answer is sent."""
        return self.target.chat_id is not None


def conversation_key(request: ChatRequest | None, caller_id: str | None) -> str | None:
    """The conversation a turn continues or starts (None for a one-off chat), as a lock name."""
    if caller_id is not None:
        return "stateful:" + caller_id
    chat_id = (request.conversation_id or "").strip().lower() if request is not None else ""
    return "chat:" + chat_id if CHAT_ID.match(chat_id) else None


async def plan_turn(conversations: Conversations, request: ChatRequest, choice: ModelChoice, caller_id: str | None,
                    account_exists: Callable[[str], bool]) -> TurnPlan:
    """Look the conversation up (if any) and say where this turn goes."""
    if caller_id is not None:
        entry = await conversations.lookup(caller_id)

        async def bind(turn: Turn) -> None:
            await conversations.bind(caller_id, turn.chat_id, turn.account.name, turn.protocol, turn.parent_id)
        if entry is not None:
            _check_owner(entry, caller_id, account_exists)
            return TurnPlan(_existing(choice, entry, entry["chat_id"]), bind)
        return TurnPlan(ChatTarget(choice.agent_id, keep=True), bind)
    if request.conversation_id is not None:
        chat_id = request.conversation_id.strip().lower()

        async def remember(turn: Turn) -> None:
            await conversations.remember_chat(turn.chat_id, turn.account.name, turn.protocol, turn.parent_id)
        if CHAT_ID.match(chat_id):
            entry = await conversations.chat(chat_id)
            if entry is None:
                raise Failure(NOT_FOUND, f"Unknown conversation_id '{request.conversation_id}': pass the id a "
                              "previous answer returned, or leave it out to start one.",
                              field="conversation_id", code="conversation_not_found")
            _check_owner(entry, chat_id, account_exists)
            return TurnPlan(_existing(choice, entry, chat_id), remember, reply_with_chat_id=True)
        return TurnPlan(ChatTarget(choice.agent_id, keep=True), remember, reply_with_chat_id=True)
    return TurnPlan(ChatTarget(choice.agent_id))


def _existing(choice: ModelChoice, entry: dict, chat_id: str) -> ChatTarget:
    return ChatTarget(choice.agent_id, entry["account"], chat_id, entry.get("parent_id"), entry.get("protocol"),
                      keep=True)


def _check_owner(entry: dict, name: str, account_exists: Callable[[str], bool]) -> None:
    """Unavailable at once when the account holding the conversation's chat left config.json (not a wait for it)."""
    if not account_exists(entry["account"]):
        raise Failure(UNAVAILABLE, f"The conversation '{name}' lives in the Kimi account '{entry['account']}', which "
                      "is no longer in config.json; put that account back to continue it.",
                      code="conversations_unavailable")
