"""The refresher loop: decide per account, refresh under the store's lock, back off, stop cleanly."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import random
import select
import time
from collections.abc import Callable
from enum import Enum

import schedule

from common.config import STATE_OK, STATE_RELOGIN, Config, set_tokens, update_status, update_status_if_token
from common.errors import ConfigError
from common.jwt_claims import try_decode_claims
from common.redact import fingerprint
from common.settings import auth_base_url
from common.store import ConfigStore, StoreBusy
from common.account_state import access_token_live, awaiting_relogin
from refresher.decision import refresh_reason
from refresher.kimi_auth import KimiAuthClient, RefreshRejected, RefreshTransient, TokenPair

log = logging.getLogger("refresher")

STATE_RETRYING = "retrying"
SAVE_ATTEMPTS = 5


class Stopper:
    """A stop flag that a signal handler may set safely.

    threading.Event is not safe here: its set() takes a lock that the interrupted main thread may
    already hold inside wait(), and the process would hang. A flag plus a self-pipe has no lock.
    """

    def __init__(self) -> None:
        self._flag = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def set(self) -> None:
        self._flag = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b"x")

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` s, waking at once when set; return whether it is set."""
        if not self._flag:
            select.select([self._read], [], [], max(0.0, timeout))
        return self._flag


class Outcome(Enum):
    """What one refresh attempt came to."""

    REFRESHED = "refreshed"
    NOT_DUE = "not due"
    RELOGIN = "relogin required"
    FAILED = "failed"


class Refresher:
    """Owns the scheduler, the per-account back-off and the Kimi auth client."""

    def __init__(self, store: ConfigStore, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.stop_event = Stopper()
        self._client = self._make_client(config)
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._unsaved: dict[str, TokenPair] = {}
        self._warned: set[tuple[str, str]] = set()
        self._scheduler = schedule.Scheduler()
        self._tick_seconds = 0.0

    @staticmethod
    def _make_client(config: Config) -> KimiAuthClient:
        up = config.upstream
        return KimiAuthClient(auth_base_url(up), up["base_url"], up["connect_timeout"], up["refresh_timeout"])

    # --- the loop ---------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Tick until stop_event is set; a tick in progress always finishes (and saves) first."""
        self._reschedule()
        self.tick()
        while not self.stop_event.is_set():
            self._scheduler.run_pending()
            idle = self._scheduler.idle_seconds
            self.stop_event.wait(max(0.0, idle if idle is not None else self._tick_seconds))
        self._client.close()
        log.info("refresher stopped on request")

    def _reschedule(self) -> None:
        tick = float(self.config.refresher["tick_seconds"])
        if tick != self._tick_seconds:
            self._scheduler.clear()
            self._scheduler.every(tick).seconds.do(self.tick)
            self._tick_seconds = tick

    def tick(self) -> None:
        """One pass over the accounts; never raises, so the loop lives on."""
        try:
            self._reload_config()
            self._save_unsaved()
            for account in self.config.accounts:
                if self.stop_event.is_set():
                    return
                if awaiting_relogin(account):
                    self._warn_relogin_once(account.name, account.status.rejected_token)
                    continue
                if account.enabled and not account.refresh_token:
                    self._watch_access_only(account)
                    continue
                if self._retry_at.get(account.name, 0.0) > self.clock():
                    continue
                if refresh_reason(account, self.clock(), float(self.config.refresher["margin_seconds"])):
                    self.refresh_account(account.name)
        except Exception:  # noqa: BLE001 - the daemon must outlive any single failure
            log.exception("refresher tick failed; trying again next tick")

    def _reload_config(self) -> None:
        new = self.store.current(lock_wait=1.0)
        if new.upstream != self.config.upstream:
            self._client.close()
            self._client = self._make_client(new)
        self.config = new
        self._reschedule()

    def _warn_relogin_once(self, name: str, rejected: str) -> None:
        if (name, rejected) not in self._warned:
            self._warned.add((name, rejected))
            log.warning("account %r needs a new login: its token %s was refused by Kimi or has run out. Paste a "
                        "new refresh_token (or kimi-auth token) into %s; the refresher picks it up by itself.",
                        name, rejected, self.store.path)

    def _watch_access_only(self, account) -> None:
        """A kimi-auth token without a refresh token cannot be renewed: warn ahead, then mark it spent."""
        claims = try_decode_claims(account.access_token)
        if claims is None or claims.exp is None:
            return
        left = claims.exp - self.clock()
        token_fp = fingerprint(account.access_token)
        if left <= 0:
            self.store.update(lambda doc: update_status_if_token(
                doc, self.store.path, account.name, token_fp, state=STATE_RELOGIN, rejected_token=token_fp,
                last_error="the kimi-auth token expired and has no refresh token to renew it"))
            self._warn_relogin_once(account.name, token_fp)
        elif left <= float(self.config.refresher["expiry_warning_seconds"]) and (account.name, "soon " + token_fp) \
                not in self._warned:
            self._warned.add((account.name, "soon " + token_fp))
            log.warning("account %r holds only a kimi-auth token (%s), which cannot be renewed; it expires at %s. "
                        "Paste a new one, or a refresh_token, into %s.", account.name, token_fp,
                        _iso(claims.exp), self.store.path)

    # --- one refresh ------------------------------------------------------------------------

    def refresh_account(self, name: str) -> Outcome:
        """Refresh `name` if still due, holding the lock from reading its token to saving the new pair."""
        with self.store.transaction() as tx:
            # Re-read inside the lock: another refresher may have spent this token a moment ago.
            account = tx.config().account(name)
            now = self.clock()
            reason = account and refresh_reason(account, now, float(self.config.refresher["margin_seconds"]))
            if not reason:
                return Outcome.NOT_DUE
            log.debug("refreshing account %r: %s", name, reason)
            try:
                pair = self._client.refresh(account.refresh_token)
            except RefreshRejected as exc:
                update_status(tx.doc, name, state=STATE_RELOGIN, last_error=str(exc),
                              rejected_token=fingerprint(account.refresh_token))
                tx.save()
                self._forget_backoff(name)
                self._warn_relogin_once(name, fingerprint(account.refresh_token))
                return Outcome.RELOGIN
            except RefreshTransient as exc:
                delay = self._back_off(name)
                log.warning("refreshing account %r failed: %s; retrying in %.0fs with the same token",
                            name, exc, delay)
                update_status(tx.doc, name, state=STATE_RETRYING, last_error=str(exc))
                tx.save()
                return Outcome.FAILED
            self._store_pair(tx, name, pair)
        self._forget_backoff(name)
        expiry = _expiry(pair.access_token)
        log.info("refreshed account %r: access token %s valid until %s, refresh token %s",
                 name, fingerprint(pair.access_token), expiry or "unknown", fingerprint(pair.refresh_token))
        return Outcome.REFRESHED

    def _store_pair(self, tx, name: str, pair: TokenPair) -> None:
        """Save the new pair; the old refresh token may already be dead, so try hard and keep it if we cannot."""
        set_tokens(tx.doc, name, pair.access_token, pair.refresh_token)
        update_status(tx.doc, name, state=STATE_OK, last_error="", rejected_token="", refresh_requested="",
                      last_refresh_at=_iso(self.clock()), access_token_expires_at=_expiry(pair.access_token))
        for attempt in range(1, SAVE_ATTEMPTS + 1):
            try:
                tx.save()
                self._unsaved.pop(name, None)
                return
            except (OSError, ConfigError) as exc:
                log.error("saving the new tokens of %r failed (attempt %d/%d): %s",
                          name, attempt, SAVE_ATTEMPTS, exc)
                if attempt < SAVE_ATTEMPTS:
                    time.sleep(0.2 * attempt)   # even while stopping: these tokens must be written
        self._unsaved[name] = pair
        log.critical("the new tokens of %r are held in memory only; fix %s so they can be written "
                     "(do not stop the refresher until they are)", name, self.store.path)

    def _save_unsaved(self) -> None:
        for name, pair in list(self._unsaved.items()):
            with self.store.transaction() as tx:
                self._store_pair(tx, name, pair)

    def _back_off(self, name: str) -> float:
        failures = self._failures[name] = self._failures.get(name, 0) + 1
        base = float(self.config.refresher["retry_base_seconds"])
        ceiling = float(self.config.refresher["retry_max_seconds"])
        # Full jitter on an exponential step keeps many processes from retrying in lockstep.
        delay = random.uniform(0.5, 1.0) * min(ceiling, base * 2 ** (failures - 1))
        self._retry_at[name] = self.clock() + delay
        return delay

    def _forget_backoff(self, name: str) -> None:
        self._failures.pop(name, None)
        self._retry_at.pop(name, None)

    # --- --once -------------------------------------------------------------------------

    def run_once(self) -> int:
        """Refresh what is due once; 0 when every enabled account then holds a live access token, else 1."""
        margin = float(self.config.refresher["margin_seconds"])
        failed = False
        for account in self.config.accounts:
            if refresh_reason(account, self.clock(), margin):
                try:
                    outcome = self.refresh_account(account.name)
                except StoreBusy as exc:
                    log.error("could not lock the config: %s", exc)
                    outcome = Outcome.FAILED
                failed |= outcome in (Outcome.FAILED, Outcome.RELOGIN)
        self._client.close()
        final = self.store.load()
        for account in final.accounts:
            if not account.enabled:
                continue
            if not account.refresh_token and not awaiting_relogin(account):
                self._watch_access_only(account)   # may have just marked it relogin_required
                account = self.store.load().account(account.name)
            if awaiting_relogin(account):
                self._warn_relogin_once(account.name, account.status.rejected_token)
                failed = True
            elif not access_token_live(account, self.clock()):
                log.warning("account %r holds no live access token", account.name)
                failed = True
        return 1 if failed else 0


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="seconds")


def _expiry(access_token: str) -> str:
    claims = try_decode_claims(access_token)
    return _iso(claims.exp) if claims and claims.exp is not None else ""
