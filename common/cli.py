"""What both commands share on the command line: --config, --log-level, and loading the store."""

from __future__ import annotations

import argparse
import sys

from common.config import Config
from common.errors import ConfigError
from common.redact import SCRUBBER, setup_logging
from common.store import ConfigStore, StoreBusy


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="config.json", help="path to config.json (default: ./config.json)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def open_config(prog: str, args: argparse.Namespace) -> tuple[ConfigStore, Config] | None:
    """Set up logging and load the config; print one line and return None when it cannot be used."""
    setup_logging(args.log_level)
    try:
        store = ConfigStore(args.config)
        config = store.load()
    except (ConfigError, StoreBusy) as exc:
        print(f"{prog}: cannot use the config: {exc}", file=sys.stderr)
        return None
    SCRUBBER.register(*config.api_keys)
    return store, config
