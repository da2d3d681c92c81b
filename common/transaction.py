"""One locked read-modify-write of config.json: replayable changes, a last check before the commit, the ledger."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from common.config import Config, parse_config
from common.errors import ConfigError
from common.store_files import StoreBusy, decode, digest, file_error, flock, read_all
from common.token_guard import heal
from common.token_ledger import Ledger, LedgerUnavailable, token_id

if TYPE_CHECKING:
    from common.store import ConfigStore

log = logging.getLogger("common.store")

T = TypeVar("T")
_REPLAYS = 10


class ChangedMeanwhile(Exception):
    """The file changed (an editor saved it) between our read and our write."""

    def __init__(self, data: bytes) -> None:
        super().__init__("changed meanwhile")
        self.data = data


class Transaction:
    """An open, locked read-modify-write of config.json (and of its token ledger)."""

    def __init__(self, store: ConfigStore) -> None:
        self._store, self.fd, self.doc, self.writable = store, -1, {}, False
        self._seen = b""   # digest of the bytes we last read or wrote
        self._changes: list[Callable[[dict], object]] = []
        self.file_tokens: frozenset[str] = frozenset()   # ids of the refresh tokens the file itself holds
        self.ledger = store.ledger.read() if store.ledger else Ledger()

    def config(self) -> Config:
        """The document as a validated Config (raises ConfigError)."""
        return parse_config(self.doc, self._store.path, self._store._environ)

    def apply(self, change: Callable[[dict], T]) -> T:
        """Apply `change` to `doc` and remember it, so that save() can replay it over an outside edit."""
        self._changes.append(change)
        return change(self.doc)

    def save(self) -> None:
        """Write `doc` now; the lock stays held until the transaction ends.

        People edit the file without our lock. When it changed since we read it, the edit wins and the
        changes made through apply() are replayed on top of it (after healing any spent token it put back).
        The check is repeated just before the rename (or the write in place), so the window in which an
        edit can still be overwritten is that last step alone.
        """
        current = self._current_bytes()
        for _ in range(_REPLAYS):
            if digest(current) != self._seen:
                self._replay(current)
            try:
                self._store._write(self.doc, self)
                return
            except ChangedMeanwhile as changed:
                current = changed.data
        raise StoreBusy(f"{self._store.path} kept changing while we tried to save it")

    def check_unchanged(self) -> None:
        """Raise ChangedMeanwhile when the file no longer holds what we last read or wrote."""
        current = self._current_bytes()
        if digest(current) != self._seen:
            raise ChangedMeanwhile(current)

    def _current_bytes(self) -> bytes:
        if not self._store.in_place:
            self.reopen()   # an editor may have renamed a new file into place (in place, the inode never changes)
        return read_all(self.fd)

    def _replay(self, current: bytes) -> None:
        doc = decode(current, self._store.path)
        self.seen(current)
        self.file_tokens |= _held_ids(doc, self._store)
        for line in heal(doc, self.ledger, self._store.path) if self._store.ledger else ():
            log.warning("%s", line)
        for change in self._changes:
            change(doc)
        self.doc = doc
        log.info("%s was changed by another program during an update: the update went on top of it",
                 self._store.path)

    def save_ledger(self) -> None:
        """Write `ledger` durably now; raise LedgerUnavailable."""
        if self._store.ledger is None:
            raise LedgerUnavailable(errno.EINVAL, f"{self._store.path} keeps no token ledger")
        self._store.ledger.write(self.ledger, self.file_tokens)

    def read(self) -> None:
        """(Re)read `doc` from the open file."""
        data = read_all(self.fd)
        self.doc = decode(data, self._store.path)
        self.seen(data)
        self.file_tokens = _held_ids(self.doc, self._store)   # before any healing: what is on disk

    def reopen(self) -> None:
        """Open the file now at the path (after a replace, or an editor's), flock'd in in-place mode."""
        self.close()
        try:
            try:
                self.fd, self.writable = os.open(self._store.path, os.O_RDWR | os.O_CLOEXEC), True
            except PermissionError:
                # A read-only file can still be replaced, and the token ledger still written.
                self.fd, self.writable = os.open(self._store.path, os.O_RDONLY | os.O_CLOEXEC), False
        except OSError as exc:
            raise file_error(self._store.path, exc) from None
        if self._store.in_place:
            flock(self.fd, fcntl.LOCK_EX, self._store._lock_timeout)

    def seen(self, data: bytes) -> None:
        """Remember the file's bytes as we read or wrote them ourselves."""
        self._seen = digest(data)

    def close(self) -> None:
        """Close the file (dropping its flock)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _held_ids(doc: dict, store: ConfigStore) -> frozenset[str]:
    """Ids of the refresh tokens `doc` holds (none when it is not a usable config)."""
    try:
        accounts = parse_config(doc, store.path, store._environ).accounts
    except ConfigError:
        return frozenset()
    return frozenset(token_id(a.refresh_token) for a in accounts if a.refresh_token)
