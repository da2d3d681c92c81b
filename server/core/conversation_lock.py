"""One turn at a time per conversation, in every server process: a queue per process, fcntl locks between them."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
from collections.abc import AsyncIterator

from server.core.errors import CONFLICT, UNAVAILABLE, Failure

log = logging.getLogger("server.conversations")

# Each conversation key locks one byte of the lock file at an offset from its hash. POSIX record locks
# beyond the end of a file are fine, so the file stays empty; 2**40 offsets make two keys sharing one a
# non-event (and sharing would only make them take turns together, never break either).
SLOTS = 1 << 40
POLL_FIRST, POLL_MAX = 0.005, 0.1   # seconds between tries for a lock another process holds
RETRY_AFTER = 5


def busy(key: str, waited: float) -> Failure:
    """The 409 for a turn that did not get its conversation within the wait."""
    name = key.partition(":")[2] or key   # the caller's id, without the kind of conversation
    return Failure(CONFLICT, f"Conversation '{name}' is busy: another turn of it has been running for over {waited:g} s "
                   "(one turn at a time per conversation). Retry when it has finished.",
                   code="conversation_busy", retry_after=RETRY_AFTER)


class _Queue:
    """The turns of one slot waiting in this process, in arrival order (asyncio.Lock is first come, first served)."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class TurnLocks:
    """`async with locks.hold("kind:id")`: the turn runs alone on its conversation, or 409 after `wait_seconds`."""

    def __init__(self, lock_path: str, wait_seconds: float) -> None:
        self.lock_path, self.wait_seconds = lock_path, wait_seconds
        self._fd: int | None = None
        self._queues: dict[int, _Queue] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Queue behind this conversation's running turn (in any process), then hold it until the block ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        slot = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % SLOTS
        queue = self._queues.setdefault(slot, _Queue())
        # Anyone else here on this slot (holding it or queued, even if not yet on the lock) goes first.
        waited = queue.users > 0
        queue.users += 1
        try:
            # POSIX record locks belong to the process: two turns here must never both think they hold one,
            # so they take turns on the in-process queue first.
            if waited:
                self._log_waiting(key)
            if not await _acquire(queue.lock, deadline - loop.time()):
                raise busy(key, self.wait_seconds)
            try:
                await self._lock_slot(slot, key, deadline, logged=waited)
                try:
                    yield
                finally:
                    self._unlock_slot(slot)
            finally:
                queue.lock.release()
        finally:
            queue.users -= 1
            if not queue.users:
                del self._queues[slot]

    def _log_waiting(self, key: str) -> None:
        log.info("another turn of conversation %r is running; this one waits (up to %g s)", key, self.wait_seconds)

    async def _lock_slot(self, slot: int, key: str, deadline: float, logged: bool) -> None:
        """Take the slot's byte lock without blocking the event loop: try, and try again until the deadline."""
        fd = self._lock_file()
        loop = asyncio.get_running_loop()
        pause = POLL_FIRST
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot)
                return
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise _unavailable(self.lock_path, exc) from None
            if not logged:
                logged = True
                self._log_waiting(key)
            left = deadline - loop.time()
            if left <= 0:
                raise busy(key, self.wait_seconds)
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, POLL_MAX)

    def _unlock_slot(self, slot: int) -> None:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, slot)
        except OSError as exc:
            # Unreachable in practice; the lock would go with the process, so say so and carry on.
            log.error("could not unlock a conversation in %s: %s", self.lock_path, exc.strerror)

    def _lock_file(self) -> int:
        # Opened once per process and never closed: closing any descriptor of it would drop every lock held.
        if self._fd is None:
            try:
                self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise _unavailable(self.lock_path, exc) from None
        return self._fd


async def _acquire(lock: asyncio.Lock, timeout: float) -> bool:
    """lock.acquire() within `timeout` s; never leaves the lock taken when it answers False (or is cancelled)."""
    # Not wait_for: before Python 3.12 it can lose an acquire that lands as the timeout fires, leaking the lock.
    attempt = asyncio.ensure_future(lock.acquire())
    try:
        await asyncio.wait({attempt}, timeout=max(0.0, timeout))
    except asyncio.CancelledError:
        _abandon(lock, attempt)
        raise
    if attempt.done():
        return attempt.result()
    _abandon(lock, attempt)
    return False


def _abandon(lock: asyncio.Lock, attempt: asyncio.Future) -> None:
    """Give up an acquire: cancel it, and release the lock should it have been granted all the same."""
    attempt.cancel()
    attempt.add_done_callback(lambda done: lock.release() if not done.cancelled() and done.result() else None)


def _unavailable(path: str, exc: OSError) -> Failure:
    log.error("conversations are unavailable: the lock file %s: %s", path, exc.strerror)
    return Failure(UNAVAILABLE, "Conversations are unavailable right now: their lock file cannot be used (see the server "
                   "log).", code="conversations_unavailable")
