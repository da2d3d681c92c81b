"""python -m tests.kimi_emulator --port N: run the Kimi emulator until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

import tornado.httpserver
import tornado.netutil

from tests.kimi_emulator.app import make_app
from tests.kimi_emulator.auth_rpc import WEBS
from tests.kimi_emulator.state import EmulatorState


async def main() -> None:
    parser = argparse.ArgumentParser(description="A local Kimi web API emulator for kimi-bridge tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--access-ttl", type=float, default=900.0, help="access-token lifetime in seconds")
    parser.add_argument("--rotation", choices=("strict", "lenient"), default="strict")
    parser.add_argument("--web", choices=WEBS, default="2026",
                        help="2026: Connect and the refresh RPC only (legacy REST paths 404); legacy: REST, the "
                             "GET refresh and Connect (the refresh RPC 404)")
    parser.add_argument("--ready-file", help="write the bound port here once listening")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s emulator %(levelname)s %(message)s")
    app = make_app(EmulatorState(web=args.web))
    app.emulator_state.tokens.access_ttl = args.access_ttl
    app.emulator_state.tokens.rotation = args.rotation
    server = tornado.httpserver.HTTPServer(app)
    sockets = tornado.netutil.bind_sockets(args.port, args.host)
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as f:
            f.write(str(port))
        os.replace(args.ready_file + ".tmp", args.ready_file)
    print(f"kimi emulator listening on http://{args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


if __name__ == "__main__":
    asyncio.run(main())
