"""The account pool: round robin over usable accounts, failover, and asking the refresher for help."""

from __future__ import annotations

import asyncio
import logging
import time

from common.account_state import awaiting_relogin
from common.config import Account, update_status_if_token
from common.heartbeat import refresher_alive
from common.jwt_claims import try_decode_claims
from common.redact import fingerprint
from common.store import ConfigStore

log = logging.getLogger("server.accounts")


class AccountPool:
    """Reads accounts from the store on every pick, so edits to config.json apply at once."""

    def __init__(self, store: ConfigStore) -> None:
        self.store = store
        self._turn = 0
        self._rejected: set[str] = set()   # fingerprints of access tokens Kimi refused

    def usable(self) -> list[Account]:
        """Accounts with a live access token that Kimi has not refused."""
        now = time.time()
        return [a for a in self.store.current().accounts if self._usable(a, now)]

    def _usable(self, account: Account, now: float) -> bool:
        if not account.enabled or not account.access_token or awaiting_relogin(account):
            return False
        if fingerprint(account.access_token) in self._rejected:
            return False
        claims = try_decode_claims(account.access_token)
        return claims is None or claims.exp is None or claims.exp > now

    def was_rejected(self, account: Account) -> bool:
        """True when Kimi refused this account's current access token."""
        return fingerprint(account.access_token) in self._rejected

    async def refresher_alive(self) -> bool:
        """A refresher beat recently (its heartbeat beside config.json): waiting for a renewal can pay off."""
        # A file read: off the event loop, like the store's other I/O on the request path.
        return await asyncio.get_running_loop().run_in_executor(None, refresher_alive, self.store.path)

    def pick(self, tried: set[str], name: str | None = None) -> Account | None:
        """The next usable account (or the one called `name`) whose token has not been tried for this request."""
        candidates = [a for a in self.usable()
                      if fingerprint(a.access_token) not in tried and (name is None or a.name == name)]
        if not candidates:
            return None
        self._turn += 1
        return candidates[self._turn % len(candidates)]

    def protocol_of(self, account: Account) -> str:
        """`rest` or `connect`: the account's own choice, else upstream.protocol; `auto` is Connect."""
        choice = account.protocol or str(self.store.current().upstream["protocol"])
        # No 2026 client chats over REST (kimi-protocol-2026-12.md §2), whatever token it holds.
        return "connect" if choice == "auto" else choice

    async def report_rejected(self, account: Account) -> None:
        """Kimi refused this access token: stop using it and ask the refresher for a new one."""
        token_fp = fingerprint(account.access_token)
        self._rejected.add(token_fp)
        log.warning("Kimi rejected the access token %s of account %r; asking the refresher for a new one",
                    token_fp, account.name)
        await self.request_refresh(account.name, token_fp)

    async def request_refresh(self, name: str, token_fp: str) -> None:
        def mark(doc: dict) -> None:
            update_status_if_token(doc, self.store.path, name, token_fp, refresh_requested=token_fp)
        try:
            # The store blocks on a file lock: keep it off the event loop.
            await asyncio.get_running_loop().run_in_executor(None, self.store.update, mark)
        except Exception as exc:  # noqa: BLE001 - a failed request only delays the refresh to its schedule
            log.error("could not ask the refresher for an early refresh of %r: %s", name, exc)

    async def request_refresh_of_stale(self) -> int:
        """Ask for a refresh of every renewable account whose access token is spent; return how many."""
        now = time.time()
        stale = [a for a in self.store.current().accounts
                 if a.enabled and a.refresh_token and not awaiting_relogin(a) and not self._usable(a, now)]
        for account in stale:
            token_fp = fingerprint(account.access_token)
            if account.status.refresh_requested != token_fp:   # report_rejected may have asked already
                await self.request_refresh(account.name, token_fp)
        return len(stale)

    async def wait_for_account(self, tried: set[str], timeout: float, name: str | None = None) -> Account | None:
        """Wait (polling the file) until an account gets a token not tried yet, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            account = self.pick(tried, name)
            if account is not None:
                return account
            await asyncio.sleep(0.1)
        return None
