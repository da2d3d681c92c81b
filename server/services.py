"""What the handlers share: the store, the account pool, the Kimi client and fixed settings."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from common.config import Config
from common.store import ConfigStore
from server.chat.service import ChatService
from server.core.conversations import Conversations
from server.core.models import legacy_flags
from server.edge.token_check import TokenCheckCache
from server.upstream.accounts import AccountPool
from server.upstream.catalog_cache import ModelCatalogs
from server.upstream.completion_service import CompletionService
from server.upstream.kimi.client import KimiClient, Timeouts
from server.upstream.kimi.connect.protocol import ConnectProtocol
from server.upstream.kimi.rest.protocol import RestProtocol
from server.upstream.safe_fetch import SafeFetcher


@dataclass(frozen=True)
class ServerSettings:
    """Settings read once at start (the listening socket and limits cannot change under a running server)."""

    max_body_bytes: int
    cors_origins: tuple[str, ...]
    keepalive_seconds: float

    @classmethod
    def from_config(cls, config: Config) -> ServerSettings:
        origins = tuple(o.strip() for o in str(config.server["cors_origins"]).split(",") if o.strip())
        return cls(int(config.server["max_body_bytes"]), origins or ("*",), float(config.server["keepalive_seconds"]))


class Services:
    """Built once per process and handed to every handler through initialize()."""

    def __init__(self, store: ConfigStore, config: Config) -> None:
        self.store = store
        self.settings = ServerSettings.from_config(config)
        self.started = time.time()
        up = config.upstream
        self.kimi = KimiClient(up["base_url"], Timeouts(up["connect_timeout"], up["request_timeout"],
                                                        up["idle_timeout"]), float(up["pool_idle_seconds"]))
        self.pool = AccountPool(store)
        self.token_checks = TokenCheckCache()
        ports = frozenset(int(p) for p in str(config.server["fetch_allowed_ports"]).split(",") if p.strip().isdigit())
        self.fetcher = SafeFetcher(int(config.server["max_file_bytes"]), float(config.server["fetch_timeout"]),
                                   ports)
        self.max_file_bytes = int(config.server["max_file_bytes"])
        self.conversations = Conversations(os.path.join(os.path.dirname(store.path),
                                                        str(config.server["conversations_file"])),
                                           float(config.server["conversation_wait_seconds"]))
        rest = RestProtocol(self.kimi, self.settings.keepalive_seconds, int(config.server["max_continuations"]),
                            float(up["parse_timeout"]))
        # Catalog ids never shadow kimi-bridge's own names (kimi-search, kimi-k1, ...).
        self.catalogs = ModelCatalogs(self.kimi, self.pool, float(config.server["model_catalog_refresh_seconds"]),
                                      reserved=lambda model_id: legacy_flags(model_id) is not None)
        connect = ConnectProtocol(self.kimi, self.settings.keepalive_seconds, self.catalogs,
                                  float(up["parse_timeout"]))
        self.completions = CompletionService({"rest": rest, "connect": connect}, self.pool, int(config.server["max_attempts"]),
                                             float(config.server["refresh_wait_seconds"]))
        self.chats = ChatService(self.completions, self.conversations, self.catalogs, self.fetcher,
                                 self.max_file_bytes, self.config, self.settings.keepalive_seconds)

    def config(self) -> Config:
        """The current config; a broken edit keeps the last good one (hot reload)."""
        return self.store.current()
