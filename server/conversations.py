"""Which Kimi chat (and which account and protocol) a conversation lives in, in a file beside config.json."""

from __future__ import annotations

import asyncio
import logging
import os
import time

from common.errors import ConfigError
from common.store import ConfigStore, StoreBusy
from server.errors import ApiError

log = logging.getLogger("server.conversations")

EMPTY = {"chats": {}, "stateful": {}}


def _validate(doc: dict) -> None:
    for key in EMPTY:
        if not isinstance(doc.get(key), dict):
            raise ConfigError("conversations file", key, "an object")


def _entry(chat_id: str, account: str, protocol: str, parent_id: str | None) -> dict:
    entry = {"chat_id": chat_id, "account": account, "protocol": protocol, "updated_at": int(time.time())}
    if parent_id:
        entry["parent_id"] = parent_id
    return entry


class Conversations:
    """`chats`: Kimi chat id -> owner (for `conversation_id`); `stateful`: caller id -> chat and owner."""

    def __init__(self, path: str) -> None:
        self._store = ConfigStore(path, validate=_validate)
        self.path = self._store.path
        self.problem = ""
        try:
            if not os.path.exists(self.path):
                self._store.create(dict(EMPTY))
        except OSError as exc:
            # Only conversations need this file: serve everything else, and say why they cannot work.
            self.problem = f"{self.path} cannot be created ({exc.strerror}); set server.conversations_file"
            log.error("conversations are unavailable: %s", self.problem)

    async def _run(self, function, *args):
        if self.problem:
            raise ApiError(503, f"Conversations are unavailable: {self.problem}.", type="server_error",
                           code="conversations_unavailable")
        try:
            # The store takes a file lock and fsyncs: keep that off the event loop.
            return await asyncio.get_running_loop().run_in_executor(None, function, *args)
        except (ConfigError, StoreBusy, OSError) as exc:
            log.error("conversations file: %s", exc)
            raise ApiError(503, "Conversations are unavailable right now: the conversations file cannot be read "
                           "or written (see the server log).", type="server_error",
                           code="conversations_unavailable") from None

    def _doc(self) -> dict:
        doc = self._store.read_document()
        _validate(doc)
        return doc

    async def chat(self, chat_id: str) -> dict | None:
        """{"chat_id", "account", "protocol", "parent_id"?} for a Kimi chat we made, or None."""
        entry = (await self._run(self._doc))["chats"].get(chat_id)
        return {**entry, "chat_id": chat_id} if isinstance(entry, dict) and "account" in entry else None

    async def remember_chat(self, chat_id: str, account: str, protocol: str, parent_id: str | None) -> None:
        def change(doc: dict) -> None:
            doc["chats"][chat_id] = _entry(chat_id, account, protocol, parent_id)
        await self._run(self._store.update, change)

    async def lookup(self, caller_id: str) -> dict | None:
        """{"chat_id", "account", ...} for a caller-chosen conversation id, or None."""
        entry = (await self._run(self._doc))["stateful"].get(caller_id)
        return entry if isinstance(entry, dict) and "chat_id" in entry and "account" in entry else None

    async def bind(self, caller_id: str, chat_id: str, account: str, protocol: str, parent_id: str | None) -> None:
        def change(doc: dict) -> None:
            doc["stateful"][caller_id] = _entry(chat_id, account, protocol, parent_id)
        await self._run(self._store.update, change)

    async def forget(self, caller_id: str) -> dict | None:
        """Drop a caller-chosen conversation; return what it pointed at."""
        return await self._run(self._store.update, lambda doc: doc["stateful"].pop(caller_id, None))
