"""The emulator's Tornado application: Kimi's REST routes under /api, admin hooks under /_admin."""

from __future__ import annotations

import tornado.web

from tests.kimi_emulator.admin import AdminHandler
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


def make_app(state: EmulatorState | None = None) -> tornado.web.Application:
    """Build the emulator around `state` (a new one by default)."""
    state = state or EmulatorState()
    args = {"state": state}
    routes = [
        (r"/api/auth/token/refresh", RefreshHandler, args),
        (r"/api/user", UserHandler, args),
        (r"/api/chat", ChatCreateHandler, args),
        (r"/api/chat/list", ChatListHandler, args),
        (r"/api/chat/research/usage", ResearchUsageHandler, args),
        (rf"/api/chat/{CHAT_ID}/completion/stream", CompletionStreamHandler, args),
        (rf"/api/chat/{CHAT_ID}", ChatHandler, args),
        *[(path, CamouflageHandler, args) for path in CAMOUFLAGE_PATHS],
        (r"/api/pre-sign-url", PreSignHandler, args),
        (r"/_upload/(.+)", UploadHandler, args),
        (r"/api/file", FileHandler, args),
        (r"/api/file/parse_process", ParseProcessHandler, args),
        (CONNECT_CHAT, ConnectChatHandler, args),
        (UPLOAD_PATH, ConnectUploadHandler, args),
        (PROGRESS_PATH, ProgressHandler, args),
        (r"/apiv2/(kimi\.[a-z.]+\.v1\.[A-Za-z]+Service)/([A-Za-z]+)", ConnectUnaryHandler, args),
        (r"/_admin/([a-z_]+)", AdminHandler, args),
    ]
    app = tornado.web.Application(routes)
    app.emulator_state = state
    return app
