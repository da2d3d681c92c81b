"""Run N server processes on one listening socket; forward stop signals; replace a child that dies."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger("server.prefork")

MAX_RESTARTS_PER_MINUTE = 10


def run_children(count: int, child: Callable[[], int]) -> int:
    """Fork `count` children that each run `child()`; return once they have all stopped."""
    children: dict[int, int] = {}   # pid -> slot
    stopping = False
    restarts: list[float] = []

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            # In the child: default signal handling, then serve until told to stop.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                code = child()
            finally:
                os._exit(code)
        children[pid] = slot

    def forward(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for slot in range(count):
        spawn(slot)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        slot = children.pop(pid, None)
        if slot is None or stopping:
            continue
        now = time.monotonic()
        restarts[:] = [t for t in restarts if now - t < 60] + [now]
        if len(restarts) > MAX_RESTARTS_PER_MINUTE:
            log.error("server processes keep dying; giving up")
            forward(signal.SIGTERM, None)
            continue
        log.warning("server process %d exited (%s); starting a new one", pid, _describe(status))
        spawn(slot)
    return 0


def _describe(status: int) -> str:
    """A child's wait status in words: the signal that killed it, or its exit code."""
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"code {os.WEXITSTATUS(status)}"
