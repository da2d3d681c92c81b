"""What every upstream protocol shares: the request for one turn, where it goes, and the open answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from common.config import Account
from server.core.attachments import Blob
from server.core.events import Event
from server.core.models import ModelChoice
from server.upstream.errors import UpstreamError

log = logging.getLogger("server.turn")


@dataclass(frozen=True)
class ChatTarget:
    """Where the turn goes: a new chat (deleted afterwards unless `keep`), or an existing one."""

    agent_id: str = "kimi"
    account: str | None = None    # an existing chat belongs to this account ...
    chat_id: str | None = None
    parent_id: str | None = None  # ... and, over Connect, continues after this assistant message
    protocol: str | None = None   # ... and was made over this protocol
    keep: bool = False


@dataclass(frozen=True)
class TurnRequest:
    """What to ask: the prompt text, the features, the files."""

    prompt: str
    choice: ModelChoice
    use_search: bool = False
    blobs: list[Blob] = field(default_factory=list)


class Turn:
    """One open answer from Kimi. Protocols subclass it."""

    protocol = ""

    def __init__(self, account: Account, chat_id: str, keep: bool) -> None:
        self.account, self.chat_id, self.keep = account, chat_id, keep
        self.parent_id: str | None = None   # the assistant message id, for the next turn (Connect)
        self.complete = False   # the whole answer is in: closing may let the upstream body end on its own

    def events(self) -> AsyncIterator[list[Event]]:
        """The answer as batches of events, one per upstream read; an empty batch after a keepalive's silence.

        Raises UpstreamError when the answer breaks off."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Protocol:
    """One of Kimi's upstream protocols: starts turns and deletes the chats they were in."""

    name = ""

    async def start(self, account: Account, target: ChatTarget, request: TurnRequest) -> Turn:
        raise NotImplementedError

    async def delete_chat(self, account: Account, chat_id: str) -> None:
        raise NotImplementedError

    async def delete_chat_quietly(self, account: Account, chat_id: str) -> None:
        """Delete, logging a failure rather than raising it: the answer the chat held is over."""
        try:
            await self.delete_chat(account, chat_id)
        except UpstreamError as exc:
            log.info("could not delete %s chat %s of account %r: %s", self.name, chat_id, account.name, exc)
