"""The token ledger beside config.json: spent refresh tokens, the last saved pair per account, refreshes in flight.

Why it exists: config.json is also edited by people. An editor that read the file before a rotation and
saves after it puts a spent refresh token back; a refresher killed between Kimi's answer and the save
leaves a token whose fate is unknown. The ledger remembers, outside config.json, what must never be
sent to Kimi again, and the newest pair to write back over a stale edit.

On disk: two slots, `.config.json.tokens-a` and `-b` (mode 0600). Every write goes to the older slot,
in place (so it works in a directory that no longer lets us create files), with a sequence number and
a checksum; a reader takes the newest slot that checks out. A write torn by a crash therefore loses
only itself, and callers act only after a write returned. Writers hold the config store's lock.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from dataclasses import dataclass, field

import orjson

from common.redact import fingerprint

SPENT_LIMIT = 512    # spent-token records kept (oldest dropped first): days of rotations for a few accounts
PAIRS_LIMIT = 64     # accounts whose last saved pair is kept
MAGIC = b"kimi-bridge-token-ledger 1"

ROTATED, REFUSED, INTERRUPTED = "rotated", "refused", "interrupted"


class LedgerUnavailable(OSError):
    """The ledger cannot be written, so no refresh token may be spent."""


def token_id(token: str) -> str:
    """The ledger's name for a token: a 128-bit SHA-256 prefix (never the token, never reversible)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass
class Ledger:
    """The ledger's contents; plain data, changed by the methods below and written by LedgerFile."""

    seq: int = 0
    spent: dict[str, dict] = field(default_factory=dict)     # token id -> {account, why, at}
    pairs: dict[str, dict] = field(default_factory=dict)     # account -> {access_token, refresh_token, at}
    intents: dict[str, dict] = field(default_factory=dict)   # token id -> {account, at, pid}

    def fate(self, refresh_token: str) -> dict | None:
        """Why `refresh_token` must never be sent again (spent, refused, interrupted), or None."""
        return self.spent.get(token_id(refresh_token))

    def in_flight(self, refresh_token: str) -> bool:
        """True when a refresh with this token was begun and its outcome never recorded."""
        return token_id(refresh_token) in self.intents

    def newest_pair(self, refresh_token: str) -> dict | None:
        """The last pair saved for the account that spent `refresh_token` (None if unknown, or that same token)."""
        record = self.fate(refresh_token)
        pair = record and self.pairs.get(record["account"])
        if not pair or pair["refresh_token"] == refresh_token:
            return None
        return pair

    def begin(self, account: str, refresh_token: str, now: float) -> None:
        """Note that `refresh_token` is about to be spent (written before the call to Kimi)."""
        self.intents[token_id(refresh_token)] = {"account": account, "fp": fingerprint(refresh_token), "at": now,
                                                 "pid": os.getpid()}

    def rotated(self, account: str, old_refresh: str, access_token: str, refresh_token: str, now: float) -> None:
        """Kimi answered: `old_refresh` is spent and this pair is now the account's."""
        old = token_id(old_refresh)
        self.intents.pop(old, None)
        self._spend(old, account, ROTATED, now)
        self.pairs.pop(account, None)
        self.pairs[account] = {"access_token": access_token, "refresh_token": refresh_token, "at": now}
        while len(self.pairs) > PAIRS_LIMIT:
            del self.pairs[next(iter(self.pairs))]

    def refused(self, account: str, refresh_token: str, now: float) -> None:
        """Kimi refused the token: never send it again."""
        rid = token_id(refresh_token)
        self.intents.pop(rid, None)
        self._spend(rid, account, REFUSED, now)

    def abandon(self, refresh_token: str) -> None:
        """The call failed before Kimi minted anything (5xx, timeout): the token may be tried again."""
        self.intents.pop(token_id(refresh_token), None)

    def resolve_intents(self, now: float) -> list[dict]:
        """Turn refreshes whose outcome was never recorded into spent records; return their intents.

        Only a holder of the store's writer lock calls this, and a refresh holds that lock from the
        intent to its outcome: an intent seen here belongs to a refresher that died (or could not
        write the outcome). Kimi may have minted a pair for it, so the token is treated as spent.
        """
        resolved = []
        for rid, intent in list(self.intents.items()):
            del self.intents[rid]
            if rid not in self.spent:
                self._spend(rid, intent["account"], INTERRUPTED, now)
                resolved.append({**intent, "token_id": rid})
        return resolved

    def _spend(self, rid: str, account: str, why: str, now: float) -> None:
        self.spent.pop(rid, None)   # re-insert: the newest records are the last dropped
        self.spent[rid] = {"account": account, "why": why, "at": now}

    def trim(self, keep: frozenset[str]) -> None:
        """Drop the oldest spent records over SPENT_LIMIT, never one of a token config.json still holds.

        A file that cannot be written keeps its first token for as long as the ledger carries the newer
        pairs: forgetting that token was spent would hand it out, and spend it, again.
        """
        excess = len(self.spent) - SPENT_LIMIT
        if excess > 0:
            for rid in [r for r in self.spent if r not in keep][:excess]:
                del self.spent[rid]

    def to_bytes(self) -> bytes:
        """The JSON body of a slot."""
        return orjson.dumps({"seq": self.seq, "spent": self.spent, "pairs": self.pairs, "intents": self.intents})

    @classmethod
    def from_bytes(cls, data: bytes) -> Ledger:
        """Parse a slot body written by to_bytes (raises ValueError)."""
        doc = orjson.loads(data)
        if not isinstance(doc, dict) or not isinstance(doc.get("seq"), int):
            raise ValueError("not a ledger")
        return cls(doc["seq"], dict(doc.get("spent") or {}), dict(doc.get("pairs") or {}),
                   dict(doc.get("intents") or {}))


class LedgerFile:
    """The two on-disk slots beside config.json."""

    def __init__(self, config_path: str) -> None:
        directory, name = os.path.split(os.path.abspath(config_path))
        self.slots = tuple(os.path.join(directory, f".{name}.tokens-{x}") for x in "ab")
        self._dir = directory
        self._cache_key: tuple | None = None
        self._cache: Ledger | None = None

    def stat_key(self) -> tuple:
        """Changes whenever a slot is written (for the store's read cache)."""
        key = []
        for slot in self.slots:
            try:
                st = os.stat(slot)
                key.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                key.append(None)
        return tuple(key)

    def read(self) -> Ledger:
        """The newest whole slot, or an empty ledger when there is none (a copy: callers may change it)."""
        key = self.stat_key()
        if key != self._cache_key or self._cache is None:
            self._cache, self._cache_key = self._read_newest(), key
        return Ledger.from_bytes(self._cache.to_bytes())

    def write(self, ledger: Ledger, keep: frozenset[str] = frozenset()) -> None:
        """Write `ledger` (with the next sequence number) over the older slot; raise LedgerUnavailable.

        `keep`: ids of the refresh tokens config.json holds, whose spent records outlive the bound.
        """
        ledger.trim(keep)
        target = self._older_slot()
        ledger.seq += 1
        body = ledger.to_bytes()
        data = MAGIC + b" %d %s\n" % (ledger.seq, hashlib.sha256(body).hexdigest().encode()) + body
        try:
            created = not os.path.exists(target)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, 0)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self._dir)
        except OSError as exc:
            ledger.seq -= 1
            raise LedgerUnavailable(exc.errno or errno.EIO, f"cannot write the token ledger {target}: "
                                    f"{exc.strerror or type(exc).__name__}") from None
        self._cache, self._cache_key = Ledger.from_bytes(body), self.stat_key()

    def ensure(self) -> None:
        """Create both slots now (mode 0600), while the directory still lets us; raise LedgerUnavailable."""
        for slot in self.slots:
            if not os.path.exists(slot):
                self.write(self.read())

    def _older_slot(self) -> str:
        seqs = [self._read_slot(slot) for slot in self.slots]
        a, b = (-1 if s is None else s.seq for s in seqs)
        return self.slots[0] if a <= b else self.slots[1]

    def _read_newest(self) -> Ledger:
        found = [s for s in (self._read_slot(slot) for slot in self.slots) if s is not None]
        return max(found, key=lambda s: s.seq) if found else Ledger()

    @staticmethod
    def _read_slot(path: str) -> Ledger | None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        head, _, body = data.partition(b"\n")
        parts = head.split(b" ")
        if len(parts) != 4 or b" ".join(parts[:2]) != MAGIC:
            return None
        if hashlib.sha256(body).hexdigest().encode() != parts[3]:
            return None   # torn by a crash mid-write: the other slot holds the state before it
        with contextlib.suppress(ValueError):
            ledger = Ledger.from_bytes(body)
            if ledger.seq == int(parts[2]):
                return ledger
        return None


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
