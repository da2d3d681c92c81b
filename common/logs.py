"""Logging for both processes: text or JSON lines, INFO to stdout or stderr, always through the scrubber."""

from __future__ import annotations

import datetime
import logging
import sys

import orjson

from common.redact import SCRUBBER

# Attributes every LogRecord has; anything else was passed as `extra=` and goes into a JSON line.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line = {"time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
                .isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        # Extras bypass the scrubber's rewrite of the message (a caller may send anything as a request id).
        line.update((k, SCRUBBER.scrub(v) if isinstance(v, str) else v) for k, v in vars(record).items()
                    if k not in _STANDARD and not k.startswith("_"))
        if record.exc_text or record.exc_info:
            line["exception"] = record.exc_text or self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class _Below(logging.Filter):
    """Pass only records under `level` (INFO to stdout, the rest to stderr)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        """True for records under the level."""
        return record.levelno < self.level


def setup_logging(level: str = "INFO", log_format: str = "text", split: bool = False, stream=None) -> None:
    """Log through the scrubber to stderr (or `stream`); with `split`, records under WARNING go to stdout.

    The split is for supervisors that file stderr as an error log (pm2): an INFO line is not an error.
    """
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handlers = []
    if split and stream is None:
        out = logging.StreamHandler(sys.stdout)
        out.addFilter(_Below(logging.WARNING))
        err = logging.StreamHandler(sys.stderr)
        err.setLevel(logging.WARNING)
        handlers = [out, err]
    else:
        handlers = [logging.StreamHandler(stream or sys.stderr)]
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(SCRUBBER)
        root.addHandler(handler)
    root.setLevel(level.upper())
