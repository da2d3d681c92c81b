"""The refresher's heartbeat: a small sidecar file beside config.json, so the server knows one is alive.

It is its own file (`config.json.refresher`), never a field in config.json: a beat every tick must not
rewrite the file that holds the tokens, nor race a person editing it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import time
from dataclasses import dataclass

import orjson

SUFFIX = ".refresher"
CLOCK_SKEW = 5.0   # seconds a beat may seem to come from the future (containers' clocks differ a little)


def heartbeat_path(config_path: str) -> str:
    """Where the refresher of `config_path` writes its heartbeat."""
    return os.path.abspath(config_path) + SUFFIX


@dataclass(frozen=True)
class Heartbeat:
    """One beat: who wrote it, when, and how long it stays believable."""

    pid: int
    host: str
    time: float
    stale_after: float
    tick_seconds: float

    def alive(self, now: float) -> bool:
        """Fresh enough to believe; a beat whose writer is gone (same host) only until another would beat.

        Several refreshers may share one file and overwrite each other's beat: when the last writer was
        SIGKILLed, a live one beats again within a tick, so its beat is believed for a few ticks only.
        """
        age = now - self.time
        if not -CLOCK_SKEW <= age <= self.stale_after:
            return False
        return self._writer_runs() or age <= 3 * self.tick_seconds + 1

    def _writer_runs(self) -> bool:
        """False only when the writer ran on this host and its pid is gone."""
        if self.host != socket.gethostname():
            return True   # another container or machine: only the age can tell
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True   # someone else's process: it exists
        return True


def write_heartbeat(config_path: str, stale_after: float, tick_seconds: float) -> None:
    """Replace the heartbeat atomically (temp file and rename in the same directory); raise OSError."""
    path = heartbeat_path(config_path)
    data = orjson.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(),
                         "stale_after": stale_after, "tick_seconds": tick_seconds})
    fd, temp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def read_heartbeat(config_path: str) -> Heartbeat | None:
    """The last beat, or None when there is none or it cannot be read."""
    try:
        with open(heartbeat_path(config_path), "rb") as f:
            doc = orjson.loads(f.read())
        return Heartbeat(int(doc["pid"]), str(doc["host"]), float(doc["time"]), float(doc["stale_after"]),
                         float(doc["tick_seconds"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def refresher_alive(config_path: str, now: float | None = None) -> bool:
    """True when a refresher of `config_path` has beaten recently enough to be believed."""
    beat = read_heartbeat(config_path)
    return beat is not None and beat.alive(time.time() if now is None else now)


class HeartbeatWriter:
    """The refresher's side: beat once a tick, say once when it cannot, take the beat away at a clean stop."""

    def __init__(self, config_path: str, log: logging.Logger) -> None:
        self.config_path, self._log = config_path, log
        self._failing = False

    def beat(self, tick_seconds: float, refresh_timeout: float) -> None:
        """Write a beat believable for a few ticks (a tick may spend a whole refresh call waiting on Kimi)."""
        try:
            write_heartbeat(self.config_path, max(30.0, 3 * tick_seconds + 2 * refresh_timeout), tick_seconds)
        except OSError as exc:
            if not self._failing:
                self._log.warning("cannot write the heartbeat %s (%s): the server will not wait for token "
                                  "renewals", heartbeat_path(self.config_path), exc.strerror or exc)
            self._failing = True
            return
        self._failing = False

    def remove(self) -> None:
        """Delete the heartbeat if it is this process's (another refresher may have beaten since)."""
        beat = read_heartbeat(self.config_path)
        if beat is not None and beat.pid == os.getpid() and beat.host == socket.gethostname():
            with contextlib.suppress(OSError):
                os.unlink(heartbeat_path(self.config_path))
