"""Low-level file work for the config store: flock with a deadline, whole reads and writes, decoding, mounts."""

from __future__ import annotations

import fcntl
import hashlib
import os
import time

import orjson

from common.errors import ConfigError

_POLL = 0.01


class StoreBusy(Exception):
    """The config is locked by someone else for longer than we were willing to wait."""


def flock(fd: int, operation: int, wait: float) -> None:
    """flock(2) `fd`, polling until `wait` seconds have passed; raise StoreBusy then."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StoreBusy("config.json is being written") from None
            time.sleep(_POLL)


def stat_key(st: os.stat_result) -> tuple:
    """What changes when a file is rewritten: inode, size, times."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def digest(data: bytes) -> bytes:
    """SHA-256 of `data` in hex (ASCII bytes)."""
    return hashlib.sha256(data).hexdigest().encode()


def parses(data: bytes) -> bool:
    """True when `data` is a JSON object."""
    try:
        return isinstance(orjson.loads(data), dict)
    except ValueError:
        return False


def read_all(fd: int) -> bytes:
    """The whole file behind `fd`, from its start."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` (os.write may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_dir(path: str) -> None:
    """fsync a directory, so that a rename or create in it is durable."""
    dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def decode(data: bytes, path: str) -> dict:
    """Decode a config document; raise ConfigError naming what is wrong."""
    if not data.strip():
        raise ConfigError(path, "(file)", "a JSON object", detail="the file is empty")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(path, "(file)", "valid JSON", detail=f"line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise ConfigError(path, "(top level)", "a JSON object", doc)
    return doc


def file_error(path: str, exc: OSError) -> ConfigError:
    """The ConfigError for an OSError met opening or reading `path`."""
    if isinstance(exc, FileNotFoundError):
        return ConfigError(path, "(file)", "an existing file", detail="not found; copy config.example.json")
    if isinstance(exc, IsADirectoryError):
        return ConfigError(path, "(file)", "a file", detail="it is a directory")
    if isinstance(exc, PermissionError):
        return ConfigError(path, "(file)", "a file this user may read and write", detail="permission denied")
    return ConfigError(path, "(file)", "a readable file", detail=exc.strerror or type(exc).__name__)


def is_mount_point(path: str) -> bool:
    """True when `path` itself is a mount point (a single-file bind mount)."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and unescape_mount(fields[4]) == real:
                    return True
    except OSError:
        pass
    return False


def unescape_mount(text: str) -> str:
    """Undo mountinfo's octal escapes."""
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    return text.encode().decode("unicode_escape") if "\\" in text else text
