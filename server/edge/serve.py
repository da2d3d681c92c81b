"""Start the server (`python -m server`): check the config, bind, fork the processes, serve until a stop signal."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import resource
import signal
import sys

import tornado.httpserver
import tornado.netutil

from common.cli import add_common_arguments, open_config
from common.errors import ConfigError
from common.store import ConfigStore
from server.edge import event_loop
from server.edge.app import make_app
from server.edge.base import MAX_HEADER_BYTES, MAX_URI_BYTES
from server.edge.prefork import run_children
from server.edge.readiness import warn_if_unusable
from server.services import Services
from server.upstream.accounts import AccountPool

log = logging.getLogger("server")

EXAMPLE_API_KEY = "sk-change-me"   # config.example.json's key: anyone who read the README knows it
# Tornado drops (without a word) a request whose head passes this; below it base.py answers 414/431.
HEADER_HARD_LIMIT = 16 * (MAX_URI_BYTES + MAX_HEADER_BYTES)


def main(argv: list[str] | None = None) -> int:
    """python -m server --config PATH [--host H] [--port P] [--processes N] [--log-level L] [--log-format json]."""
    parser = argparse.ArgumentParser(prog="python -m server", description="The kimi-bridge OpenAI-compatible API.")
    add_common_arguments(parser)
    parser.add_argument("--host", help="listen address (default: server.host from the config)")
    parser.add_argument("--port", type=int, help="listen port (default: server.port, 6867)")
    parser.add_argument("--processes", type=int, help="server processes (default: server.processes; 0 = one per core)")
    args = parser.parse_args(argv)
    opened = open_config("server", args)
    if opened is None:
        return 2
    store, config = opened
    if not config.api_keys:
        error = ConfigError(store.path, "api_keys", "at least one key (clients send it as a Bearer token)")
        print(f"server: cannot use the config: {error}", file=sys.stderr)
        return 2
    host = args.host or config.server["host"]
    if EXAMPLE_API_KEY in config.api_keys and not _is_loopback(host):
        print(f"server: cannot use the config: {store.path}: api_keys: still holds the example key "
              f"{EXAMPLE_API_KEY!r}, and the server would listen on {host}, reachable from other machines. "
              "Put a key of your own in api_keys (e.g. the output of `openssl rand -hex 24`), "
              "or listen on 127.0.0.1.", file=sys.stderr)
        return 2
    _raise_open_file_limit()
    port = args.port if args.port is not None else config.server["port"]
    processes = args.processes if args.processes is not None else int(config.server["processes"])
    processes = processes or os.cpu_count() or 1
    try:
        # Bound before forking, so every process accepts on the same socket.
        sockets = tornado.netutil.bind_sockets(port, host)
    except OSError as exc:
        print(f"server: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 2
    log.info("kimi-bridge server listening on http://%s:%d with %d process(es) (%d account(s), upstream %s)",
             host, port, processes, len(config.accounts), config.upstream["base_url"])
    warn_if_unusable(config, store.path, AccountPool(store))
    use_uvloop = bool(config.server["uvloop"])
    if processes == 1:
        return event_loop.run(_serve(store, config, sockets), use_uvloop)
    return run_children(processes, lambda: event_loop.run(_serve(ConfigStore(store.path), config, sockets), use_uvloop))


def _is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (`localhost`, 127.x, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False   # a host name: it may resolve to a public address


def _raise_open_file_limit() -> None:
    """Take the hard limit on open files as the soft one: every open stream holds two descriptors,
    and systemd's default soft limit (1024) would refuse connections at about 500 streams."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)


async def _serve(store: ConfigStore, config, sockets: list) -> int:
    """One process's server on the shared sockets, until SIGINT/SIGTERM; then a clean stop."""
    services = Services(store, config)
    server = tornado.httpserver.HTTPServer(
        make_app(services), xheaders=True,
        max_body_size=services.settings.max_body_bytes * 2 + (1 << 20),   # beyond this Tornado drops the connection
        max_header_size=HEADER_HARD_LIMIT,
        idle_connection_timeout=float(config.server["idle_connection_timeout"]),
        body_timeout=float(config.server["body_timeout"]))
    server.add_sockets(sockets)
    services.catalogs.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    log.info("serving on the %s event loop", "uvloop" if type(loop).__module__.startswith("uvloop") else "standard asyncio")
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: no new connections; finishing chat clean-up")
    server.stop()
    await services.catalogs.stop()
    await asyncio.wait_for(services.completions.drain(), 10)
    services.kimi.http.close()
    return 0
