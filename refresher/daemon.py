"""The refresher loop: decide per account, refresh under the store's lock, back off, stop cleanly."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import time
from collections.abc import Callable
from enum import Enum

import schedule

from common.config import STATE_OK, STATE_RELOGIN, Config, parse_config, set_tokens, update_status, update_status_if_token
from common.errors import ConfigError
from common.heartbeat import HeartbeatWriter
from common.jwt_claims import try_decode_claims
from common.timestamps import iso_utc, token_expiry
from common.redact import fingerprint
from common.settings import auth_base_url
from common.store import ConfigStore, StoreBusy
from common.token_ledger import LedgerUnavailable
from common.account_state import access_token_live, awaiting_relogin, credential
from refresher.decision import malformed_token, refresh_reason
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
        # account -> (the refresh token spent, the pair it bought) while that pair is not in config.json
        self._unsaved: dict[str, tuple[str, TokenPair]] = {}
        self._warned: set[tuple[str, str]] = set()
        self._scheduler = schedule.Scheduler()
        self._tick_seconds = 0.0
        self._heartbeat = HeartbeatWriter(store.path, log)

    @staticmethod
    def _make_client(config: Config) -> KimiAuthClient:
        up = config.upstream
        return KimiAuthClient(auth_base_url(up), up["base_url"], up["connect_timeout"], up["refresh_timeout"])

    # --- the loop ---------------------------------------------------------------------------

    def prepare_ledger(self) -> None:
        """Create the token ledger beside the config now, while its directory may still take new files."""
        try:
            self.store.ensure_ledger()
        except (OSError, ConfigError, StoreBusy) as exc:
            log.error("the token ledger beside %s cannot be created (%s): no refresh token is spent until it "
                      "can (make the directory writable for this user)", self.store.path, exc)

    def run_forever(self) -> None:
        """Tick until stop_event is set; a tick in progress always finishes (and saves) first."""
        self.prepare_ledger()
        self._reschedule()
        self.tick()
        while not self.stop_event.is_set():
            self._scheduler.run_pending()
            idle = self._scheduler.idle_seconds
            self.stop_event.wait(max(0.0, idle if idle is not None else self._tick_seconds))
        self._client.close()
        self._heartbeat.remove()
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
            self._heartbeat.beat(self._tick_seconds, float(self.config.upstream["refresh_timeout"]))
            self._reload_config()
            self._save_unsaved()
            for account in self.config.accounts:
                if self.stop_event.is_set():
                    return
                if account.name in self._unsaved:
                    continue   # its new pair is not saved yet: only the save is retried, never a refresh
                if awaiting_relogin(account):
                    self._warn_relogin_once(account.name, account.status.rejected_token)
                    continue
                if account.enabled and self._report_malformed(account):
                    continue
                if account.enabled and not account.refresh_token:
                    self._watch_access_only(account)
                    continue
                if self._retry_at.get(account.name, 0.0) > self.clock():
                    continue
                if refresh_reason(account, self.clock(), float(self.config.refresher["margin_seconds"])):
                    self.refresh_account(account.name)
        except (ConfigError, StoreBusy) as exc:
            # Someone mid-save in an editor, or a long lock: nothing was spent, the next tick looks again.
            log.warning("the config cannot be used right now (%s); trying again next tick", exc)
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

    def _report_malformed(self, account) -> bool:
        """Say once (per token) that the account's token is not a Kimi token; True when it is not."""
        problem = malformed_token(account)
        key = (account.name, "malformed " + fingerprint(credential(account)))
        if problem and key not in self._warned:
            self._warned.add(key)
            log.error("%s into %s; the refresher picks it up by itself.", problem, self.store.path)
        return problem is not None

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
                        iso_utc(claims.exp), self.store.path)

    # --- one refresh ------------------------------------------------------------------------

    def refresh_account(self, name: str) -> Outcome:
        """Refresh `name` if still due, holding the lock from reading its token to saving the new pair."""
        if name in self._unsaved:
            return Outcome.FAILED   # the pair its last refresh bought is still waiting to be saved
        with self.store.transaction() as tx:
            # Re-read inside the lock: another refresher may have spent this token a moment ago.
            account = tx.config().account(name)
            now = self.clock()
            reason = account and refresh_reason(account, now, float(self.config.refresher["margin_seconds"]))
            if not reason:
                return Outcome.NOT_DUE
            token = account.refresh_token
            if tx.ledger.fate(token) or tx.ledger.in_flight(token):
                log.error("not refreshing account %r: its refresh token %s was already spent", name, fingerprint(token))
                return Outcome.RELOGIN
            log.debug("refreshing account %r: %s", name, reason)
            try:
                # The intent is durable before the token leaves: a refresher killed during the call
                # leaves a record that keeps every later one from spending the token again.
                tx.ledger.begin(name, token, now)
                tx.save_ledger()
            except LedgerUnavailable as exc:
                delay = self._back_off(name)
                log.error("not refreshing account %r: %s; a refresh token is never spent without that record "
                          "(trying again in %.0fs)", name, exc, delay)
                return Outcome.FAILED
            try:
                pair = self._client.refresh(token)
            except RefreshRejected as exc:
                error = str(exc)   # bound here: the replayed change below may outlive the except block
                tx.ledger.refused(name, token, self.clock())
                self._save_ledger(tx, name)
                tx.apply(lambda doc: update_status(doc, name, state=STATE_RELOGIN, last_error=error,
                                                   rejected_token=fingerprint(token)))
                tx.save()
                self._forget_backoff(name)
                self._warn_relogin_once(name, fingerprint(token))
                return Outcome.RELOGIN
            except RefreshTransient as exc:
                error = str(exc)
                tx.ledger.abandon(token)
                self._save_ledger(tx, name)
                delay = self._back_off(name)
                log.warning("refreshing account %r failed: %s; retrying in %.0fs with the same token",
                            name, exc, delay)
                tx.apply(lambda doc: update_status(doc, name, state=STATE_RETRYING, last_error=error))
                tx.save()
                return Outcome.FAILED
            self._store_pair(tx, name, token, pair)
        self._forget_backoff(name)
        expiry = token_expiry(pair.access_token) or ""
        log.info("refreshed account %r: access token %s valid until %s, refresh token %s",
                 name, fingerprint(pair.access_token), expiry or "unknown", fingerprint(pair.refresh_token))
        return Outcome.REFRESHED

    def _save_ledger(self, tx, name: str) -> bool:
        """Write the ledger; on failure log it and go on (what it would say is also in memory)."""
        try:
            tx.save_ledger()
            return True
        except LedgerUnavailable as exc:
            log.error("account %r: %s", name, exc)
            return False

    def _store_pair(self, tx, name: str, spent: str, pair: TokenPair) -> None:
        """Save the new pair: the ledger first (it survives where config.json cannot be written), then the file."""
        tx.ledger.rotated(name, spent, pair.access_token, pair.refresh_token, self.clock())
        in_ledger = self._save_ledger(tx, name)

        def put(doc: dict) -> None:
            held = _held_token(doc, self.store.path, name)
            if held is None or (held not in (spent, pair.refresh_token) and not tx.ledger.fate(held)):
                # A person gave the account a genuinely new token (or removed it) meanwhile: theirs wins.
                log.warning("account %r was changed by hand during its refresh: keeping that change (the pair just "
                            "minted, refresh token %s, stays in the token ledger only)", name,
                            fingerprint(pair.refresh_token))
                return
            set_tokens(doc, name, pair.access_token, pair.refresh_token)
            update_status(doc, name, state=STATE_OK, last_error="", rejected_token="", refresh_requested="",
                          last_refresh_at=iso_utc(self.clock()), access_token_expires_at=token_expiry(pair.access_token) or "")
        tx.apply(put)
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
        if in_ledger:
            # Durable there, and every reader (the server too) sees them through the store: go on from them.
            self._unsaved.pop(name, None)
            log.critical("the new tokens of %r are saved only in the token ledger beside %s (both processes read "
                         "them from there); fix the file's permissions so they can be written into it",
                         name, self.store.path)
            return
        self._unsaved[name] = (spent, pair)
        log.critical("the new tokens of %r are held in memory only; fix %s so they can be written (do not stop "
                     "the refresher until they are); %r is not refreshed again until then",
                     name, self.store.path, name)

    def _save_unsaved(self) -> None:
        """Try again to save each pair held in memory only (its account is not refreshed until then)."""
        for name, (spent, pair) in list(self._unsaved.items()):
            with self.store.transaction() as tx:
                held = _held_token(tx.doc, self.store.path, name)
                if held is None or (held not in (spent, pair.refresh_token) and not tx.ledger.fate(held)):
                    # Someone put a genuinely new token (or removed the account) meanwhile: theirs wins.
                    log.warning("account %r was given a new refresh token by hand: dropping the pair held for it", name)
                    self._unsaved.pop(name)
                    continue
                self._store_pair(tx, name, spent, pair)

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
        self.prepare_ledger()
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
            if self._report_malformed(account):
                failed = True
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


def _held_token(doc: dict, source: str, name: str) -> str | None:
    """The refresh token `doc` holds for account `name`; None when the account is gone or the doc unusable."""
    try:
        account = parse_config(doc, source).account(name)
    except ConfigError:
        return None
    return account.refresh_token if account else None
