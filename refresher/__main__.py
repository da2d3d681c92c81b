"""python -m refresher --config PATH [--once] [--log-level LEVEL]."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from common.errors import ConfigError
from common.redact import SCRUBBER, setup_logging
from common.store import ConfigStore, StoreBusy
from refresher.daemon import Refresher

log = logging.getLogger("refresher")

EXIT_OK, EXIT_ACCOUNT_FAILED, EXIT_BAD_CONFIG = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m refresher",
                                     description="Keep the Kimi access tokens in config.json fresh.")
    parser.add_argument("--config", default="config.json", help="path to config.json (default: ./config.json)")
    parser.add_argument("--once", action="store_true",
                        help="refresh what is due and exit: 0 all accounts live, 1 an account failed, 2 bad config")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        store = ConfigStore(args.config)
        config = store.load()
    except (ConfigError, StoreBusy) as exc:
        print(f"refresher: cannot use the config: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    SCRUBBER.register(*config.api_keys)
    refresher = Refresher(store, config)
    if args.once:
        try:
            return refresher.run_once()
        except (ConfigError, StoreBusy) as exc:
            print(f"refresher: cannot use the config: {exc}", file=sys.stderr)
            return EXIT_BAD_CONFIG

    def stop(_signum, _frame) -> None:
        # Only set a flag (no locks, no logging here): a refresh in flight finishes and is saved first.
        refresher.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("refresher started: %d account(s) in %s, upstream %s", len(config.accounts), store.path,
             config.upstream["base_url"])
    refresher.run_forever()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
