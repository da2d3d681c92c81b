"""Small routes: /health (no key) and /v1/models."""

from __future__ import annotations

import time

from server import __version__
from server.base import ApiHandler
from server.models import model_list


class HealthHandler(ApiHandler):
    """Liveness plus account counts; no secrets, no key needed."""

    require_key = False

    def get(self) -> None:
        config = self.services.config()
        usable = len(self.services.pool.usable())
        self.send_json({"status": "ok" if usable else "degraded", "version": __version__,
                        "uptime_seconds": int(time.time() - self.services.started),
                        "accounts": {"total": len(config.accounts), "usable": usable}})


class ModelsHandler(ApiHandler):
    """GET /v1/models."""

    def get(self) -> None:
        self.send_json(model_list(int(self.services.started)))
