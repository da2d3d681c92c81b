"""Small routes: /health (no key), /v1/models and /v1/models/{id}."""

from __future__ import annotations

import time

from server import __version__
from server.core.models import model_list, model_object, resolve_model
from server.edge.base import ApiHandler


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
    """GET /v1/models (the catalog's ids and kimi-bridge's names), GET /v1/models/{id} (OpenAI's models.retrieve)."""

    def get(self, model_id: str | None = None) -> None:
        created, catalog = int(self.services.started), self.services.catalogs.listed()
        if model_id is None:
            self.send_json(model_list(created, catalog))
            return
        # Every name a chat request takes is retrievable (aliases, flag combinations, kimi+ agent ids);
        # anything else is the same 404 model_not_found a chat request gets.
        resolve_model(model_id, catalog)
        self.send_json(model_object(model_id, created))
