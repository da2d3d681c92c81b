"""The emulator's plain REST endpoints: tokens, user, chats, research usage, camouflage calls."""

from __future__ import annotations

import datetime

from tests.kimi_emulator.base import EmulatorHandler, KimiError, auth_invalid
from tests.kimi_emulator.tokens import AuthError


class RefreshHandler(EmulatorHandler):
    """GET /api/auth/token/refresh with `Bearer <refresh token>`."""

    endpoint = "refresh"

    async def get(self) -> None:
        if not await self.before():
            return
        try:
            access, refresh = self.state.tokens.refresh(self.bearer())
        except AuthError:
            raise auth_invalid() from None
        # Exactly these two keys, in this order (reverse-kimi unpacks the values positionally).
        self.send_json({"access_token": access, "refresh_token": refresh})


class UserHandler(EmulatorHandler):
    """GET /api/user."""

    endpoint = "user"

    async def get(self) -> None:
        if not await self.before():
            return
        user_id = self.authenticated_user()
        self.send_json({**self.state.users.get(user_id, {"id": user_id, "status": "normal"}), "id": user_id})


class ChatCreateHandler(EmulatorHandler):
    """POST /api/chat: every body variant of §2.4, unknown fields ignored."""

    endpoint = "chat_create"

    async def post(self) -> None:
        body = self.body_json()
        if not await self.before(body):
            return
        user_id = self.authenticated_user()
        kimiplus_id = str(body.get("kimiplus_id") or "kimi")
        if not self.state.agent_shaped(kimiplus_id) or not self.state.agent_known(kimiplus_id):
            raise KimiError(404, "kimiplus.not_found", "找不到对应的KimiPlus")
        name = body.get("name") if isinstance(body.get("name"), str) else "未命名会话"
        chat = self.state.create_chat(user_id, name, kimiplus_id)
        self.send_json({"id": chat.id, "name": chat.name, "kimiplus_id": kimiplus_id, "status": "normal",
                        "created_at": _iso(chat.created_at)})


class ChatHandler(EmulatorHandler):
    """DELETE /api/chat/{id}."""

    endpoint = "chat_delete"

    async def delete(self, chat_id: str) -> None:
        if not await self.before():
            return
        user_id = self.authenticated_user()
        chat = self.state.chats.get(chat_id)
        # Chats made over Connect are not deletable over REST (kimi-protocol.md §5, pitfall 11).
        if chat is None or chat.user_id != user_id or chat.protocol != "rest":
            raise KimiError(404, "chat.not_found", "找不到指定的会话")
        del self.state.chats[chat_id]
        self.state.chats_deleted += 1
        self.send_json({})


class ChatListHandler(EmulatorHandler):
    """POST /api/chat/list."""

    endpoint = "chat_list"

    async def post(self) -> None:
        body = self.body_json()
        if not await self.before(body):
            return
        user_id = self.authenticated_user()
        offset, size = _int(body.get("offset"), 0), _int(body.get("size"), 50)
        mine = sorted((c for c in self.state.chats.values() if c.user_id == user_id),
                      key=lambda c: c.created_at, reverse=True)
        items = [{"id": c.id, "name": c.name, "created_at": _iso(c.created_at), "updated_at": _iso(c.created_at),
                  "status": "normal", "type": "chat"} for c in mine[offset:offset + size]]
        self.send_json({"items": items})


class ResearchUsageHandler(EmulatorHandler):
    """GET /api/chat/research/usage."""

    endpoint = "research_usage"

    async def get(self) -> None:
        if not await self.before():
            return
        self.authenticated_user()
        self.send_json(self.state.research_usage())


class CamouflageHandler(EmulatorHandler):
    """The optional calls of §2.11: 200 `{}` unless told to fail."""

    endpoint = "camouflage"

    async def get(self, *_args) -> None:
        await self._answer()

    async def post(self, *_args) -> None:
        await self._answer()

    async def _answer(self) -> None:
        if not await self.before(self.body_json()):
            return
        self.authenticated_user()
        if self.state.faults.camouflage_errors:
            raise KimiError(500, "server.error", "服务内部错误")
        self.send_json({})


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat()
