"""Which Kimi chat (and which account and protocol) a conversation lives in, in a file beside config.json."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator

from common.errors import ConfigError
from common.store import ConfigStore, StoreBusy
from server.core.conversation_lock import TurnLocks
from server.core.errors import UNAVAILABLE, Failure

log = logging.getLogger("server.conversations")

EMPTY = {"chats": {}, "stateful": {}}
PROTOCOLS = ("rest", "connect")
# What a chat id may look like: it goes into Kimi URLs, so nothing that could change the path.
CHAT_ID_SHAPE = re.compile(r"^[0-9A-Za-z_-]{1,128}$")


def _validate(doc: dict) -> None:
    for key in EMPTY:
        if not isinstance(doc.get(key), dict):
            raise ConfigError("conversations file", key, "an object")


def _entry(chat_id: str, account: str, protocol: str, parent_id: str | None) -> dict:
    entry = {"chat_id": chat_id, "account": account, "protocol": protocol, "updated_at": int(time.time())}
    if parent_id:
        entry["parent_id"] = parent_id
    return entry


def _entry_problem(entry: object) -> str:
    """What makes a (hand-edited) entry unusable, or ''."""
    if not isinstance(entry, dict):
        return f"it is {'null' if entry is None else _shown(entry)}, not an object with chat_id, account and protocol"
    chat_id, account = entry.get("chat_id"), entry.get("account")
    if not isinstance(chat_id, str) or not CHAT_ID_SHAPE.match(chat_id):
        return f"its chat_id is {_shown(chat_id)}, not a Kimi chat id"
    if not isinstance(account, str) or not account:
        return f"its account is {_shown(account)}, not an account name"
    protocol = entry.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        return f"its protocol is {_shown(protocol)}, not one of {', '.join(PROTOCOLS)}"
    parent_id = entry.get("parent_id")
    if parent_id is not None and not (isinstance(parent_id, str) and CHAT_ID_SHAPE.match(parent_id)):
        return f"its parent_id is {_shown(parent_id)}, not a Kimi message id"
    return ""


def _shown(value: object) -> str:
    text = "missing" if value is None else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Conversations:
    """`chats`: Kimi chat id -> owner (for `conversation_id`); `stateful`: caller id -> chat and owner."""

    def __init__(self, path: str, wait_seconds: float = 60.0) -> None:
        self._store = ConfigStore(path, validate=_validate)
        self.path = self._store.path
        self._locks = TurnLocks(self.path + ".turns.lock", wait_seconds)
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
            raise Failure(UNAVAILABLE, f"Conversations are unavailable: {self.problem}.",
                          code="conversations_unavailable")
        try:
            # The store takes a file lock and fsyncs: keep that off the event loop.
            return await asyncio.get_running_loop().run_in_executor(None, function, *args)
        except (ConfigError, StoreBusy, OSError) as exc:
            log.error("conversations file: %s", exc)
            raise Failure(UNAVAILABLE, "Conversations are unavailable right now: the conversations file cannot be read "
                          "or written (see the server log).",
                          code="conversations_unavailable") from None

    def _doc(self) -> dict:
        doc = self._store.read_document()
        _validate(doc)
        return doc

    @contextlib.asynccontextmanager
    async def turn(self, key: str | None) -> AsyncIterator[None]:
        """Hold conversation `key` (None: no conversation) while a turn reads, uses and records it."""
        if key is None:
            yield
            return
        if self.problem:
            await self._run(self._doc)   # raises the 503 that says why
        async with self._locks.hold(key):
            yield

    def _checked(self, section: str, key: str, entry: object) -> dict:
        """The entry, or a 503 naming what a hand edit broke in it (the entry itself is left as it is)."""
        problem = _entry_problem(entry)
        if not problem:
            return entry
        log.error("%s: the %s entry %r cannot be used: %s", self.path, section, key, problem)
        what = "conversation_id" if section == "chats" else "conversation"
        raise Failure(UNAVAILABLE, f"The {what} '{key}' cannot be used: in {os.path.basename(self.path)} (\"{section}\") "
                      f"{problem}. Fix or remove that entry; other conversations still work.",
                      code="conversations_unavailable")

    async def chat(self, chat_id: str) -> dict | None:
        """{"chat_id", "account", "protocol", "parent_id"?} for a Kimi chat we made, or None."""
        chats = (await self._run(self._doc))["chats"]
        if chat_id not in chats:
            return None
        entry = chats[chat_id]
        if isinstance(entry, dict):
            entry = {**entry, "chat_id": chat_id}   # here the chat's id is the entry's key
        return self._checked("chats", chat_id, entry)

    async def remember_chat(self, chat_id: str, account: str, protocol: str, parent_id: str | None) -> None:
        def change(doc: dict) -> None:
            doc["chats"][chat_id] = _entry(chat_id, account, protocol, parent_id)
        await self._run(self._store.update, change)

    async def lookup(self, caller_id: str) -> dict | None:
        """{"chat_id", "account", ...} for a caller-chosen conversation id, or None."""
        stateful = (await self._run(self._doc))["stateful"]
        return self._checked("stateful", caller_id, stateful[caller_id]) if caller_id in stateful else None

    async def bind(self, caller_id: str, chat_id: str, account: str, protocol: str, parent_id: str | None) -> None:
        def change(doc: dict) -> None:
            doc["stateful"][caller_id] = _entry(chat_id, account, protocol, parent_id)
        await self._run(self._store.update, change)

    async def forget(self, caller_id: str) -> dict | None:
        """Drop a caller-chosen conversation; return what it pointed at (an unusable entry stays, as a 503)."""
        def change(doc: dict) -> dict | None:
            if caller_id not in doc["stateful"]:
                return None
            entry = self._checked("stateful", caller_id, doc["stateful"][caller_id])
            del doc["stateful"][caller_id]
            return entry
        return await self._run(self._store.update, change)
