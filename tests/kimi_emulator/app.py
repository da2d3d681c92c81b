"""The emulator's Tornado application: Kimi's routes for the web it plays, admin hooks under /_admin."""

from __future__ import annotations

import tornado.routing
import tornado.web

from tests.kimi_emulator.admin import AdminHandler
from tests.kimi_emulator.auth_rpc import REFRESH_RPC_PATH, NotFoundHandler, RefreshRpcHandler, WebSwitchHandler
from tests.kimi_emulator.connect import CHAT_PATH as CONNECT_CHAT
from tests.kimi_emulator.connect import ConnectChatHandler, ConnectUnaryHandler
from tests.kimi_emulator.connect_files import PROGRESS_PATH, UPLOAD_PATH, ProgressHandler
from tests.kimi_emulator.connect_files import UploadHandler as ConnectUploadHandler
from tests.kimi_emulator.file_handlers import FileHandler, ParseProcessHandler, PreSignHandler, UploadHandler
from tests.kimi_emulator.rest_handlers import (CamouflageHandler, ChatCreateHandler, ChatHandler, ChatListHandler,
                                               RefreshHandler, ResearchUsageHandler, UserHandler)
from tests.kimi_emulator.state import EmulatorState
from tests.kimi_emulator.stream_handler import CompletionStreamHandler

CHAT_ID = r"([0-9a-v]{20})"

CAMOUFLAGE_PATHS = [
    rf"/api/chat/{CHAT_ID}/pre-n2s", r"/api/suggestion", rf"/api/chat/{CHAT_ID}/token_size",
    r"/api/prompt-snippet/instance", r"/api/user/usage", r"/api/chat_1m/user/status",
    r"/api/kimi_mv/user/status", r"/api/kimiplus/history", r"/api/kimiplus/search", r"/api/show_case/list",
]


class OnWeb(tornado.routing.PathMatches):
    """A path that exists only while the emulator plays one web (checked per request: the switch is live)."""

    def __init__(self, pattern: str, state: EmulatorState, web: str) -> None:
        super().__init__(pattern)
        self._state, self._web = state, web

    def match(self, request):
        return super().match(request) if self._state.web == self._web else None


def make_app(state: EmulatorState | None = None) -> tornado.web.Application:
    """Build the emulator around `state` (a new one by default)."""
    state = state or EmulatorState()
    args = {"state": state}

    def legacy(path: str, handler) -> tornado.routing.Rule:
        # The REST web of 2024-25: gone from the 2026 web (kimi-protocol-2026-12.md §2), so 404 there.
        return tornado.routing.Rule(OnWeb(path, state, "legacy"), handler, args)

    routes = [
        legacy(r"/api/auth/token/refresh", RefreshHandler),
        tornado.routing.Rule(OnWeb(REFRESH_RPC_PATH, state, "2026"), RefreshRpcHandler, args),
        (r"/api/user", UserHandler, args),
        legacy(r"/api/chat", ChatCreateHandler),
        legacy(r"/api/chat/list", ChatListHandler),
        legacy(r"/api/chat/research/usage", ResearchUsageHandler),
        legacy(rf"/api/chat/{CHAT_ID}/completion/stream", CompletionStreamHandler),
        legacy(rf"/api/chat/{CHAT_ID}", ChatHandler),
        *[(path, CamouflageHandler, args) for path in CAMOUFLAGE_PATHS],
        legacy(r"/api/pre-sign-url", PreSignHandler),
        (r"/_upload/(.+)", UploadHandler, args),
        legacy(r"/api/file", FileHandler),
        legacy(r"/api/file/parse_process", ParseProcessHandler),
        (CONNECT_CHAT, ConnectChatHandler, args),
        (UPLOAD_PATH, ConnectUploadHandler, args),
        (PROGRESS_PATH, ProgressHandler, args),
        (r"/apiv2/(kimi\.[a-z.]+\.v1\.[A-Za-z]+Service)/([A-Za-z]+)", ConnectUnaryHandler, args),
        (r"/_admin/web", WebSwitchHandler, args),
        (r"/_admin/([a-z_]+)", AdminHandler, args),
        (r"/.*", NotFoundHandler, args),
    ]
    app = tornado.web.Application(routes)
    app.emulator_state = state
    return app
