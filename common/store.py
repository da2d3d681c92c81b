"""The locked config store: cheap cached reads, and atomic, serialised read-modify-write transactions."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
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

log = logging.getLogger(__name__)

T = TypeVar("T")

# Test-only: turn the writers' lock off so that the race tests can be seen to fail without it.
UNSAFE_NO_LOCK_ENV = "KIMI_BRIDGE_TESTING_UNSAFE_NO_LOCK"
_POLL = 0.01


class StoreBusy(Exception):
    """The config is locked by someone else for longer than we were willing to wait."""


class ConfigStore:
    """config.json on disk, following the store rules of design.md."""

    def __init__(self, path: str, *, lock_timeout: float = 30.0, environ: Mapping[str, str] | None = None,
                 validate: Callable[[dict], object] | None = None) -> None:
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
        self.in_place = _is_mount_point(self.path)
        self._cache_key: tuple | None = None
        self._cache: Config | None = None
        self._last_error = ""

    # --- reading -------------------------------------------------------------------------

    def load(self, lock_wait: float = 5.0) -> Config:
        """The current config, re-parsed only when the file changed; raise ConfigError or StoreBusy."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise _file_error(self.path, exc) from None
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key == self._cache_key and self._cache is not None:
            return self._cache
        doc, key = self._read_document(lock_wait)
        config = parse_config(doc, self.path, self._environ)
        self._cache_key, self._cache = key, config
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
            raise _file_error(self.path, exc) from None
        try:
            # Writers in place hold LOCK_EX; a shared lock keeps us from reading half a write.
            _flock(fd, fcntl.LOCK_SH, lock_wait)
            st = os.fstat(fd)
            data = _read_all(fd)
        except OSError as exc:
            raise _file_error(self.path, exc) from None
        finally:
            os.close(fd)  # also drops the shared lock
        return _decode(data, self.path), (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    # --- writing -------------------------------------------------------------------------

    def update(self, mutate: Callable[[dict], T]) -> T:
        """Lock, re-read, apply `mutate` to the document, save; return what `mutate` returned."""
        with self.transaction() as tx:
            result = mutate(tx.doc)
            tx.save()
            return result

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Hold the lock while the caller reads `tx.doc`, works, and calls `tx.save()`."""
        with self._writer_lock():
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except OSError as exc:
                raise _file_error(self.path, exc) from None
            try:
                if self.in_place:
                    _flock(fd, fcntl.LOCK_EX, self._lock_timeout)
                self._finish_interrupted_write(fd)
                self._remove_stale_temps()
                yield Transaction(self, _decode(_read_all(fd), self.path), fd)
            finally:
                os.close(fd)  # also drops the flock

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

    def _write(self, doc: dict, fd: int) -> None:
        # Refuse to write what the processes could not read back.
        self._validate(doc)
        data = orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"
        if not self.in_place:
            try:
                self._write_replace(data)
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                log.warning("%s cannot be replaced (single-file bind mount?): writing in place from now on",
                            self.path)
                self.in_place = True
                _flock(fd, fcntl.LOCK_EX, self._lock_timeout)
        self._write_in_place(data, fd)

    def _write_replace(self, data: bytes) -> None:
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
                _write_all(tfd, data)
                os.fsync(tfd)
            finally:
                os.close(tfd)
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        _fsync_dir(self._dir)

    def _write_in_place(self, data: bytes, fd: int) -> None:
        # A journal first, so a crash mid-write rolls forward to the new tokens on the next start.
        journal_ok = self._write_journal(_digest(_read_all(fd)) + b"\n" + data)
        # Pad to the old length (JSON allows trailing white space) so the file parses at every step:
        # after the one write, and again after the truncate.
        old_size = os.fstat(fd).st_size
        os.lseek(fd, 0, os.SEEK_SET)
        _write_all(fd, data + b" " * max(0, old_size - len(data)))
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
                _write_all(jfd, data)
                os.fsync(jfd)
            finally:
                os.close(jfd)
            os.replace(temp, self._journal_path)
            _fsync_dir(self._dir)
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
        current = _read_all(fd)
        # Only over the file the journal was written against (or a torn copy of it): never over
        # anything written since, which may hold newer tokens.
        if _digest(current) == old_digest or not _parses(current):
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


class Transaction:
    """An open, locked read-modify-write of config.json."""

    def __init__(self, store: ConfigStore, doc: dict, fd: int) -> None:
        self._store, self._fd, self.doc = store, fd, doc

    def config(self) -> Config:
        """The document as a validated Config (raises ConfigError)."""
        return parse_config(self.doc, self._store.path, self._store._environ)

    def save(self) -> None:
        """Write `doc` now; the lock stays held until the transaction ends."""
        self._store._write(self.doc, self._fd)


def _flock(fd: int, operation: int, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StoreBusy("config.json is being written") from None
            time.sleep(_POLL)


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode()


def _parses(data: bytes) -> bool:
    try:
        return isinstance(orjson.loads(data), dict)
    except ValueError:
        return False


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(path: str) -> None:
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _decode(data: bytes, path: str) -> dict:
    if not data.strip():
        raise ConfigError(path, "(file)", "a JSON object", detail="the file is empty")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(path, "(file)", "valid JSON", detail=f"line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise ConfigError(path, "(top level)", "a JSON object", doc)
    return doc


def _file_error(path: str, exc: OSError) -> ConfigError:
    if isinstance(exc, FileNotFoundError):
        return ConfigError(path, "(file)", "an existing file", detail="not found; copy config.example.json")
    if isinstance(exc, IsADirectoryError):
        return ConfigError(path, "(file)", "a file", detail="it is a directory")
    if isinstance(exc, PermissionError):
        return ConfigError(path, "(file)", "a file this user may read and write", detail="permission denied")
    return ConfigError(path, "(file)", "a readable file", detail=exc.strerror or type(exc).__name__)


def _is_mount_point(path: str) -> bool:
    """True when `path` itself is a mount point (a single-file bind mount)."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and _unescape_mount(fields[4]) == real:
                    return True
    except OSError:
        pass
    return False


def _unescape_mount(text: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return text.encode().decode("unicode_escape") if "\\" in text else text
