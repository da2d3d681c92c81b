"""python -m refresher --config PATH [--once] [--log-level LEVEL]."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from common.cli import add_common_arguments, open_config
from common.errors import ConfigError
from common.store import StoreBusy
from refresher.daemon import Refresher

log = logging.getLogger("refresher")

EXIT_OK, EXIT_ACCOUNT_FAILED, EXIT_BAD_CONFIG = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m refresher",
                                     description="Keep the Kimi access tokens in config.json fresh.")
    add_common_arguments(parser)
    parser.add_argument("--once", action="store_true",
                        help="refresh what is due and exit: 0 all accounts live, 1 an account failed, 2 bad config")
    args = parser.parse_args(argv)
    opened = open_config("refresher", args)
    if opened is None:
        return EXIT_BAD_CONFIG
    store, config = opened
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
