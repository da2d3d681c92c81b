"""python -m server.healthcheck [--config PATH] [--probe live|ready|refresher]: exit 0 when healthy (Docker HEALTHCHECK).

live: the server answers /health; ready: /health/ready (an account is usable); refresher: its heartbeat is fresh.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

from common.errors import ConfigError
from common.heartbeat import heartbeat_path, refresher_alive
from common.store import ConfigStore

PATHS = {"live": "/health", "ready": "/health/ready"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.healthcheck")
    parser.add_argument("--config", default="config.json")
    parser.add_argument("--timeout", type=float, default=4.0)
    parser.add_argument("--probe", default="live", choices=("live", "ready", "refresher"))
    args = parser.parse_args(argv)
    if args.probe == "refresher":
        if refresher_alive(args.config):
            return 0
        print(f"unhealthy: no fresh refresher heartbeat in {heartbeat_path(args.config)}", file=sys.stderr)
        return 1
    try:
        port = ConfigStore(args.config).load().server["port"]
    except ConfigError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    request = urllib.request.Request(f"http://127.0.0.1:{port}{PATHS[args.probe]}", method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            ok = response.status == 200
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: {PATHS[args.probe]} answered {exc.code}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
