"""The locked config store: cheap cached reads, and atomic, serialised read-modify-write transactions."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

import orjson
from filelock import FileLock, Timeout

from common.config import Config, parse_config
from common.errors import ConfigError
from common.store_files import (StoreBusy, decode, digest, file_error, flock, fsync_dir, is_mount_point,
                                 parses, read_all, stat_key, write_all)
from common.token_guard import heal
from common.token_ledger import LedgerFile, LedgerUnavailable
from common.transaction import Transaction

log = logging.getLogger(__name__)

T = TypeVar("T")

# Test-only: turn the writers' lock off so that the race tests can be seen to fail without it.
UNSAFE_NO_LOCK_ENV = "KIMI_BRIDGE_TESTING_UNSAFE_NO_LOCK"
# A directory that will not take our temp file (read-only for us, full, read-only mount): write in place.
_DIR_REFUSED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


class ConfigStore:
    """config.json on disk, following the store rules of design.md."""

    def __init__(self, path: str, *, lock_timeout: float = 30.0, environ: Mapping[str, str] | None = None,
                 validate: Callable[[dict], object] | None = None, token_ledger: bool = True) -> None:
        environ = os.environ if environ is None else environ
        # What a document must pass before it is written: by default, being a usable config.
        self._validate = validate or (lambda doc: parse_config(doc, self.path, self._environ))
        self.path = os.path.abspath(path)
        self._dir, name = os.path.split(self.path)
        self._temp_prefix = f".{name}.tmp-"
        self._journal_path = os.path.join(self._dir, f".{name}.journal")
        self._environ = environ
        self._lock_timeout = lock_timeout
        # Never the data file itself: some filelock versions truncate the path they lock.
        self._file_lock = FileLock(self.path + ".lock", timeout=lock_timeout)
        self._locking = environ.get(UNSAFE_NO_LOCK_ENV, "") not in ("1", "true", "yes")
        if not self._locking:
            log.warning("%s is set: config writes are NOT locked (tests only)", UNSAFE_NO_LOCK_ENV)
        # A single-file bind mount cannot be replaced (EBUSY): write in place under flock instead.
        self.in_place = is_mount_point(self.path)
        self._dir_refused = False
        # Spent refresh tokens and the last saved pairs (common/token_ledger.py); None for other documents.
        self.ledger = LedgerFile(self.path) if token_ledger else None
        self._cache_key: tuple | None = None
        self._cache: Config | None = None
        self._last_error = ""

    # --- reading -------------------------------------------------------------------------

    def load(self, lock_wait: float = 5.0) -> Config:
        """The current config, re-parsed only when the file changed; raise ConfigError or StoreBusy."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise file_error(self.path, exc) from None
        ledger_key = self.ledger.stat_key() if self.ledger else None
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, ledger_key)
        if key == self._cache_key and self._cache is not None:
            return self._cache
        doc, file_key = self._read_document(lock_wait)
        if self.ledger is not None:
            # Readers see the newest saved pair even before a writer has put it back into the file.
            heal(doc, self.ledger.read(), self.path)
        config = parse_config(doc, self.path, self._environ)
        self._cache_key, self._cache = (*file_key, ledger_key), config
        return config

    def current(self, lock_wait: float = 0.0) -> Config:
        """Like load(), but keep the last good config when the file is bad or busy (logged once)."""
        try:
            config = self.load(lock_wait)
        except (ConfigError, StoreBusy) as exc:
            if self._cache is None:
                raise
            if str(exc) != self._last_error:
                self._last_error = str(exc)
                log.error("keeping the last good config: %s", exc)
            return self._cache
        self._last_error = ""
        return config

    def read_document(self, lock_wait: float = 5.0) -> dict:
        """The raw decoded file (for tools that inspect it)."""
        return self._read_document(lock_wait)[0]

    def create(self, doc: dict) -> bool:
        """Write `doc` as a new file (mode 0600) unless the file exists; return whether it was created."""
        data = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
        with self._writer_lock():
            if os.path.exists(self.path):
                return False
            self._write_replace(data)
            return True

    def _read_document(self, lock_wait: float) -> tuple[dict, tuple]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise file_error(self.path, exc) from None
        try:
            # Writers in place hold LOCK_EX; a shared lock keeps us from reading half a write.
            flock(fd, fcntl.LOCK_SH, lock_wait)
            st = os.fstat(fd)
            data = read_all(fd)
        except OSError as exc:
            raise file_error(self.path, exc) from None
        finally:
            os.close(fd)  # also drops the shared lock
        return decode(data, self.path), stat_key(st)

    # --- writing -------------------------------------------------------------------------

    def update(self, mutate: Callable[[dict], T]) -> T:
        """Lock, re-read, apply `mutate` to the document, save; return what `mutate` returned."""
        results: list[T] = []
        with self.transaction() as tx:
            tx.apply(lambda doc: results.append(mutate(doc)))
            tx.save()
            return results[-1]   # from the last replay, when save() replayed it over an outside edit

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Hold the lock while the caller reads `tx.doc`, changes it with `tx.apply()`, and calls `tx.save()`."""
        with self._writer_lock():
            tx = Transaction(self)
            try:
                tx.reopen()
                self._finish_interrupted_write(tx.fd)
                self._remove_stale_temps()
                tx.read()
                self._guard(tx)
                yield tx
            finally:
                tx.close()  # also drops the flock

    def ensure_ledger(self) -> None:
        """Create the token ledger's files now, under the lock; raise LedgerUnavailable, ConfigError or StoreBusy."""
        if self.ledger is not None:
            with self.transaction():
                self.ledger.ensure()

    def _guard(self, tx: Transaction) -> None:
        """Settle refreshes a dead refresher left open, and heal spent refresh tokens out of the file."""
        if self.ledger is None:
            return
        resolved = tx.ledger.resolve_intents(time.time())
        for intent in resolved:
            log.error("a refresh of account %r with refresh token %s never recorded its outcome (the refresher "
                      "stopped mid-refresh?): that token counts as spent and is never sent again",
                      intent["account"], intent.get("fp", "fp:?"))
        if resolved:
            try:
                tx.save_ledger()
            except LedgerUnavailable as exc:
                log.error("%s", exc)   # this transaction still holds the verdict in memory
        lines = heal(tx.doc, tx.ledger, self.path)
        for line in lines:
            log.warning("%s", line)
        if lines:
            try:
                tx.save()
            except (OSError, ConfigError) as exc:
                log.error("could not write the repaired %s yet: %s", self.path, exc)

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        if not self._locking:
            yield
            return
        try:
            self._file_lock.acquire()
        except Timeout:
            raise StoreBusy(f"{self.path} stayed locked for {self._lock_timeout:g}s") from None
        try:
            yield
        finally:
            self._file_lock.release()

    def _write(self, doc: dict, tx: Transaction) -> None:
        # Refuse to write what the processes could not read back.
        self._validate(doc)
        data = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
        if not self.in_place:
            try:
                self._write_replace(data, tx.check_unchanged)
                if self._dir_refused:
                    self._dir_refused = False
                    log.warning("%s: its directory takes temp files again: atomic replaces resumed", self.path)
                tx.reopen()   # the fd still names the file we replaced
                tx.seen(data)
                return
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    log.warning("%s cannot be replaced (single-file bind mount?): writing in place from now on",
                                self.path)
                    self.in_place = True
                elif exc.errno in _DIR_REFUSED:
                    if not self._dir_refused:
                        self._dir_refused = True
                        log.warning("%s: no temp file can be written beside it (%s): writing the file in place "
                                    "under flock until one can", self.path, exc.strerror)
                else:
                    raise
        tx.check_unchanged()   # (re)opens the file at the path outside in-place mode
        if not tx.writable:
            raise PermissionError(errno.EACCES, "permission denied: the file is read-only for this user", self.path)
        flock(tx.fd, fcntl.LOCK_EX, self._lock_timeout)
        self._write_in_place(data, tx.fd)
        tx.seen(data)

    def _write_replace(self, data: bytes, before_commit: Callable[[], None] = lambda: None) -> None:
        try:
            old = os.stat(self.path)
        except FileNotFoundError:
            old = None
        temp = os.path.join(self._dir, self._temp_prefix + f"{os.getpid()}-{secrets.token_hex(4)}")
        tfd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                if old is not None:
                    os.fchmod(tfd, old.st_mode & 0o7777)
                    with contextlib.suppress(PermissionError):
                        if (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
                            os.fchown(tfd, old.st_uid, old.st_gid)
                write_all(tfd, data)
                os.fsync(tfd)
            finally:
                os.close(tfd)
            before_commit()
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        fsync_dir(self._dir)

    def _write_in_place(self, data: bytes, fd: int) -> None:
        old_size = os.fstat(fd).st_size
        if len(data) > old_size:
            # Grow with trailing white space first (JSON allows it): a full disk fails here, while the file
            # still holds the old document whole, and the overwrite below needs no new blocks.
            os.lseek(fd, old_size, os.SEEK_SET)
            write_all(fd, b" " * (len(data) - old_size))
            old_size = len(data)
        # A journal first, so a crash mid-write rolls forward to the new tokens on the next start.
        journal_ok = self._write_journal(digest(read_all(fd)) + b"\n" + data)
        # Pad to the old length (JSON allows trailing white space) so the file parses at every step:
        # after the one write, and again after the truncate.
        os.lseek(fd, 0, os.SEEK_SET)
        write_all(fd, data + b" " * max(0, old_size - len(data)))
        os.ftruncate(fd, len(data))
        os.fsync(fd)
        if journal_ok:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._journal_path)

    def _write_journal(self, data: bytes) -> bool:
        temp = self._journal_path + f".{os.getpid()}"
        try:
            jfd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                write_all(jfd, data)
                os.fsync(jfd)
            finally:
                os.close(jfd)
            os.replace(temp, self._journal_path)
            fsync_dir(self._dir)
            return True
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            log.debug("no journal for the in-place write (%s): continuing without", exc.strerror)
            return False

    def _finish_interrupted_write(self, fd: int) -> None:
        """Roll an in-place write that a crash interrupted forward from its journal."""
        try:
            with open(self._journal_path, "rb") as journal:
                old_digest, _, data = journal.read().partition(b"\n")
            orjson.loads(data)
        except (OSError, ValueError):
            return
        current = read_all(fd)
        # Only over the file the journal was written against (or a torn copy of it): never over
        # anything written since, which may hold newer tokens.
        if digest(current) == old_digest or not parses(current):
            log.warning("completing an interrupted write of %s from its journal", self.path)
            self._write_in_place(data, fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._journal_path)

    def _remove_stale_temps(self) -> None:
        # We hold the writer lock, so any temp file here belongs to a writer that died.
        try:
            names = os.listdir(self._dir)
        except OSError:
            return
        for name in names:
            if name.startswith(self._temp_prefix) or name.startswith(os.path.basename(self._journal_path) + "."):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self._dir, name))
                    log.info("removed a stale temp file %s", name)
