"""GET /v1/status: every account's state and token expiry, and the server's version and uptime; no secrets."""

from __future__ import annotations

import os
import time

from common.account_state import awaiting_relogin
from common.redact import fingerprint
from common.timestamps import iso_utc, token_expiry
from refresher.decision import planned_refresh_at
from server import __version__
from server.edge.base import ApiHandler


class StatusHandler(ApiHandler):
    """Behind the API key: what an operator needs to see, fingerprints instead of tokens."""

    def get(self) -> None:
        usable = {a.name for a in self.services.pool.usable()}
        config = self.services.config()
        margin, now = float(config.refresher["margin_seconds"]), time.time()
        accounts = []
        for account in config.accounts:
            next_refresh = planned_refresh_at(account, now, margin)
            status = account.status
            accounts.append({
                "name": account.name, "enabled": account.enabled, "usable": account.name in usable,
                "protocol": self.services.pool.protocol_of(account),
                "state": "relogin_required" if awaiting_relogin(account) else (status.state or "unknown"),
                "access_token": fingerprint(account.access_token) if account.access_token else None,
                "access_token_expires_at": token_expiry(account.access_token),
                "refresh_token": fingerprint(account.refresh_token) if account.refresh_token else None,
                "refresh_token_expires_at": token_expiry(account.refresh_token),
                "last_refresh_at": status.last_refresh_at or None,
                # From the access token's exp and the refresher's margin; null: no refresh planned.
                "next_refresh_at": iso_utc(next_refresh) if next_refresh is not None else None,
                "next_refresh_in_seconds": max(0, int(next_refresh - now)) if next_refresh is not None else None,
                "last_error": status.last_error or None,
            })
        self.send_json({"object": "status", "version": __version__, "pid": os.getpid(),
                        "uptime_seconds": int(time.time() - self.services.started),
                        "pending_chat_deletions": self.services.completions.pending_deletions,
                        "chat_deletions_given_up": self.services.completions.deletions_given_up,
                        "model_degrade_notices": self.services.completions.protocols["connect"].degrades.status(),
                        "accounts": accounts})
