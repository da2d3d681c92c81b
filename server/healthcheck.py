"""python -m server.healthcheck [--config PATH]: exit 0 when the local server answers /health (Docker HEALTHCHECK)."""

from __future__ import annotations

import argparse
import sys
import urllib.request

from common.errors import ConfigError
from common.store import ConfigStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.healthcheck")
    parser.add_argument("--config", default="config.json")
    parser.add_argument("--timeout", type=float, default=4.0)
    args = parser.parse_args(argv)
    try:
        port = ConfigStore(args.config).load().server["port"]
    except ConfigError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=args.timeout) as response:
            ok = response.status == 200
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
