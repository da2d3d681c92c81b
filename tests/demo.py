"""`make demo`: the emulator as Kimi, plus the real refresher and server, and a real answer.

python -m tests.demo [--port P]   runs until Ctrl-C, then stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import requests

from tests.helpers import ROOT, Emulator, child_env, free_port, spawn, stop, wait_until, write_json

DEMO_DIR = os.path.join(ROOT, ".demo")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="server port (default: 6867, or a free one)")
    args = parser.parse_args()
    os.makedirs(DEMO_DIR, exist_ok=True)
    here = Path(DEMO_DIR)
    emulator = Emulator(here)
    procs: list[subprocess.Popen] = []
    try:
        account = emulator.new_account("demo")
        port = args.port or _port_or_free(6867)
        key = "sk-demo-" + secrets.token_hex(8)
        config = here / "config.json"
        # No access token yet: the refresher's first job is to mint one.
        write_json(config, {"api_keys": [key], "upstream": {"base_url": emulator.url},
                            "server": {"host": "127.0.0.1", "port": port},
                            "accounts": [{"name": "demo", "refresh_token": account["refresh_token"],
                                          "access_token": ""}]})
        os.chmod(config, 0o600)
        env = child_env()
        procs.append(spawn("refresher", "--config", str(config), env=env))
        wait_until(lambda: json.loads(config.read_text())["accounts"][0]["access_token"], 60,
                   "the refresher's first refresh")
        procs.append(spawn("server", "--config", str(config), env=env))
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _healthy(url), 60, "the server")
        body = {"model": "kimi", "messages": [{"role": "user", "content": "Hello, Kimi!"}]}
        curl = (f"curl -s {url}/v1/chat/completions -H {shlex.quote('Authorization: Bearer ' + key)} "
                f"-H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body, ensure_ascii=False))}")
        answer = requests.post(f"{url}/v1/chat/completions", json=body, timeout=60,
                               headers={"Authorization": f"Bearer {key}"}).json()
        print(f"""
kimi-bridge demo: Kimi emulator at {emulator.url}, refresher and server running on {config}

Try it with curl:
    $ {curl}

or with the openai SDK:
    from openai import OpenAI
    client = OpenAI(base_url="{url}/v1", api_key="{key}")
    print(client.chat.completions.create(model="kimi",
          messages=[{{"role": "user", "content": "Hello, Kimi!"}}]).choices[0].message.content)

The server just answered: {answer["choices"][0]["message"]["content"]}

Press Ctrl-C to stop.""", flush=True)
        _wait_for_signal()
    finally:
        for proc in reversed(procs):
            stop(proc)
        emulator.close()
        print("demo stopped", flush=True)
    return 0


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=2).json()["accounts"]["usable"] == 1
    except (requests.RequestException, ValueError, KeyError):
        return False


def _port_or_free(preferred: int) -> int:
    import socket
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def _wait_for_signal() -> None:
    received = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda s, _f: received.append(s))
    while not received:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
