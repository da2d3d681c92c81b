"""What both commands share on the command line: --config, logging options, --version, and loading the store."""

from __future__ import annotations

import argparse
import logging
import sys

from common import __version__
from common.config import Config
from common.errors import ConfigError
from common.logs import setup_logging
from common.redact import SCRUBBER
from common.store import ConfigStore, StoreBusy

log = logging.getLogger("config")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """--config, --log-level, --log-format, --log-stream and --version."""
    parser.add_argument("--config", default="config.json", help="path to config.json (default: ./config.json)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--log-format", default="text", choices=("text", "json"),
                        help="text lines (default) or one JSON object per line")
    parser.add_argument("--log-stream", default="stderr", choices=("stderr", "split"),
                        help="stderr: every line there (default); split: under WARNING to stdout, the rest to stderr")
    parser.add_argument("--version", action="version", version=f"kimi-bridge {__version__}")


def open_config(prog: str, args: argparse.Namespace) -> tuple[ConfigStore, Config] | None:
    """Set up logging and load the config; print one line and return None when it cannot be used."""
    setup_logging(args.log_level, args.log_format, split=args.log_stream == "split")
    try:
        store = ConfigStore(args.config)
        config = store.load()
    except (ConfigError, StoreBusy) as exc:
        return _refuse(prog, str(exc))
    SCRUBBER.register(*config.api_keys)
    fatal = [k for k in config.unknown_keys if k.fatal]
    if fatal:
        return _refuse(prog, fatal[0].message(store.path))
    for unknown in config.unknown_keys:
        log.warning("%s", unknown.message(store.path))
    return store, config


def _refuse(prog: str, reason: str) -> None:
    """One line on stderr, no traceback (the callers exit 2)."""
    print(f"{prog}: cannot use the config: {reason}", file=sys.stderr)
