"""Readiness: is any account usable, and if not, why; GET /health/ready and the warning at start."""

from __future__ import annotations

import logging
import time
from collections import Counter

from common.account_state import awaiting_relogin
from common.config import Account, Config
from common.heartbeat import heartbeat_path, refresher_alive
from common.timestamps import token_expiry
from server.edge.base import ApiHandler

log = logging.getLogger("server")

# Problem kinds (the keys /health/ready counts; never a name or a token).
DISABLED, RELOGIN, NO_TOKEN, EXPIRED, REJECTED = "disabled", "relogin_required", "no_access_token", "expired", \
    "rejected"


def problem_of(account: Account, now: float, rejected: bool) -> tuple[str, str]:
    """(kind, sentence) for an account that is not usable; only called for those."""
    if not account.enabled:
        return DISABLED, "disabled in the config"
    if awaiting_relogin(account):
        return RELOGIN, "needs a new login (Kimi refused its token or it ran out)"
    if not account.access_token:
        return NO_TOKEN, "has no access token yet (the refresher gets one from its refresh_token)"
    if rejected:
        return REJECTED, "Kimi rejected its access token; a renewed one is needed"
    expiry = token_expiry(account.access_token)
    when = f" at {expiry}" if expiry else ""
    return EXPIRED, f"its access token expired{when}"


def unusable(services, now: float | None = None) -> list[tuple[Account, str, str]]:
    """Every configured account that cannot serve now, with its problem (empty when all can)."""
    now = time.time() if now is None else now
    pool = services.pool
    usable = {a.name for a in pool.usable()}
    return [(a, *problem_of(a, now, pool.was_rejected(a))) for a in services.config().accounts
            if a.name not in usable]


def warn_if_unusable(config: Config, store_path: str, pool) -> None:
    """At start: say loudly when no account can serve, why, and whether a refresher will mend it."""
    if pool.usable():
        return
    now = time.time()
    reasons = "; ".join(f"{a.name!r}: {problem_of(a, now, False)[1]}" for a in config.accounts)
    hint = ("a refresher is running and may mend this" if refresher_alive(store_path, now) else
            f"no refresher is running (no fresh heartbeat in {heartbeat_path(store_path)}): start "
            f"`python -m refresher --config {store_path}` beside this server")
    log.warning("no Kimi account is usable, so every completion answers 503 until one is: %s. %s",
                reasons, hint)


class ReadyHandler(ApiHandler):
    """GET /health/ready: 200 while an account is usable, else 503 with counts of why; no key, no secrets."""

    require_key = False

    async def get(self) -> None:
        """200 ready or 503 not_ready, with counts per problem."""
        config = self.services.config()
        problems = unusable(self.services)
        usable = len(config.accounts) - len(problems)
        body = {"status": "ready" if usable else "not_ready",
                "accounts": {"total": len(config.accounts), "usable": usable,
                             **Counter(kind for _, kind, _ in problems)},
                "refresher_alive": await self.services.pool.refresher_alive()}
        if not usable:
            body["reason"] = "no Kimi account is usable"
        self.send_json(body, 200 if usable else 503)

