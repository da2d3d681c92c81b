"""Test helpers: wait on conditions, run the emulator and our processes as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import orjson
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def child_env(**extra: str) -> dict:
    """The environment for a child process: this interpreter's, the repo on the path, no stray overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIMI_BRIDGE_")}
    env["PYTHONPATH"] = ROOT
    env.update(extra)
    return env


def spawn(module: str, *args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """Start `python -m module args` from the repo root."""
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env or child_env(), **kwargs)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Signal `proc` and wait for it; kill it if it does not stop."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{proc.args} did not stop within {timeout:g}s of {sig}") from None
    return proc.returncode


class Emulator:
    """A running `python -m tests.kimi_emulator`, with its admin hooks."""

    def __init__(self, tmp_path, access_ttl: float = 900.0, rotation: str = "strict") -> None:
        ready = tmp_path / f"emulator-{time.monotonic_ns()}.port"
        self.proc = spawn("tests.kimi_emulator", "--port", "0", "--ready-file", str(ready),
                          "--access-ttl", str(access_ttl), "--rotation", rotation,
                          stdout=subprocess.DEVNULL)
        wait_until(lambda: ready.exists() or self.proc.poll() is not None, 30, "the emulator to listen")
        if self.proc.poll() is not None:
            raise RuntimeError("the emulator exited at start")
        self.port = int(ready.read_text())
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = requests.Session()

    def admin(self, action: str, body: dict | None = None) -> object:
        response = self.http.post(f"{self.url}/_admin/{action}", data=orjson.dumps(body or {}), timeout=10)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict:
        return self.http.get(f"{self.url}/_admin/stats", timeout=10).json()

    def received(self, endpoint: str = "") -> list:
        return self.http.get(f"{self.url}/_admin/received", params={"endpoint": endpoint}, timeout=10).json()

    def new_account(self, name: str = "") -> dict:
        return self.admin("accounts", {"name": name})

    def fault(self, endpoint: str, **spec) -> None:
        self.admin("faults", {"endpoint": endpoint, **spec})

    def close(self) -> None:
        self.http.close()
        stop(self.proc)


def write_json(path, doc: dict) -> None:
    """Write a config file the way a user would (not through the store)."""
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def read_json(path) -> dict:
    return orjson.loads(path.read_bytes())
