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

from tests.kimi_emulator.auth_rpc import REFRESH_RPC_PATH

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

    def __init__(self, tmp_path, access_ttl: float = 900.0, rotation: str = "strict", web: str = "2026") -> None:
        ready = tmp_path / f"emulator-{time.monotonic_ns()}.port"
        self.web = web
        self.proc = spawn("tests.kimi_emulator", "--port", "0", "--ready-file", str(ready),
                          "--access-ttl", str(access_ttl), "--rotation", rotation, "--web", web,
                          stdout=subprocess.DEVNULL)
        wait_until(lambda: ready.exists() or self.proc.poll() is not None, 30, "the emulator to listen")
        if self.proc.poll() is not None:
            raise RuntimeError("the emulator exited at start")
        self.port = int(ready.read_text())
        ready.unlink()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = requests.Session()

    def admin(self, action: str, body: dict | None = None) -> object:
        response = self.http.post(f"{self.url}/_admin/{action}", data=orjson.dumps(body or {}), timeout=10)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict:
        return self.admin_get("stats")

    def admin_get(self, action: str) -> object:
        return self.http.get(f"{self.url}/_admin/{action}", timeout=10).json()

    def received(self, endpoint: str = "") -> list:
        return self.http.get(f"{self.url}/_admin/received", params={"endpoint": endpoint}, timeout=10).json()

    def prompts(self) -> list[dict]:
        """Every answer turn Kimi received, oldest first: {"protocol", "chat_id", "text"} (continuations left out).

        `text` is the prompt Kimi got (REST: messages[0].content; Connect: the message's text blocks);
        `chat_id` is the chat it went to ("" for a Connect turn that starts a new chat).
        """
        turns = []
        for record in self.received():
            body = record["body"] if isinstance(record["body"], dict) else {}
            if record["endpoint"] == "completion" and body.get("action") != "continue":
                messages = body.get("messages") or [{}]
                turns.append({"protocol": "rest", "chat_id": record["path"].split("/")[3],
                              "text": str(messages[0].get("content", ""))})
            elif record["endpoint"] == "connect_chat":
                blocks = (body.get("message") or {}).get("blocks") or []
                turns.append({"protocol": "connect", "chat_id": str(body.get("chat_id") or body.get("chatId") or ""),
                              "text": "".join(str((b.get("text") or {}).get("content", "")) for b in blocks
                                              if isinstance(b, dict) and isinstance(b.get("text"), dict))})
        return turns

    def new_account(self, name: str = "") -> dict:
        return self.admin("accounts", {"name": name})

    def fault(self, endpoint: str, **spec) -> None:
        self.admin("faults", {"endpoint": endpoint, **spec})

    def script(self, answers: list[str] | None = None, rules: list[dict] | None = None, chunks: int | str = 1,
               reset: bool = False) -> dict:
        """Queue scripted answers and/or add rules ({"contains", "answer", "chunks"?, "times"?}); return the script.

        `reset` clears the queue and rules first; `chunks` ("chars" = one event per character) applies to the
        queued answers and to rules that give none.
        """
        body: dict = {"chunks": chunks, "reset": reset}
        if answers is not None:
            body["answers"] = answers
        if rules is not None:
            body["rules"] = rules
        return self.admin("script", body)

    def refresh(self, refresh_token: str) -> requests.Response:
        """Spend `refresh_token` the way this web's own client would (the RPC, or the legacy GET)."""
        if self.web == "legacy":
            return self.http.get(f"{self.url}/api/auth/token/refresh", timeout=10,
                                 headers={"Authorization": "Bearer " + refresh_token})
        return self.http.post(f"{self.url}{REFRESH_RPC_PATH}", json={"refresh_token": refresh_token}, timeout=10)

    def close(self) -> None:
        self.http.close()
        stop(self.proc)


def write_json(path, doc: dict) -> None:
    """Write a config file the way a user would (not through the store)."""
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def read_json(path) -> dict:
    return orjson.loads(path.read_bytes())


def free_port() -> int:
    """A port nobody listens on right now."""
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def web_for(protocol: str) -> str:
    """The Kimi web a protocol is tested against: REST needs the legacy web, Connect (and auto) the 2026 one."""
    return "legacy" if protocol == "rest" else "2026"


class Stack:
    """Emulator + config.json + server process (+ optionally the refresher daemon).

    `protocol` is written to upstream.protocol and picks the emulated web (web_for), unless `web` says otherwise.
    """

    API_KEY = "sk-test-key-0123456789"

    def __init__(self, tmp_path, accounts: int = 1, server: dict | None = None, upstream: dict | None = None,
                 refresher: bool = False, access_ttl: float = 900.0, log_level: str = "INFO",
                 server_env: dict | None = None, protocol: str = "rest", web: str | None = None) -> None:
        self.tmp_path = tmp_path
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.protocol = protocol
        upstream = {"protocol": protocol, **(upstream or {})}
        self.emulator = Emulator(tmp_path, access_ttl=access_ttl, web=web or web_for(protocol))
        self.accounts = [self.emulator.new_account(f"user{i}") for i in range(accounts)]
        self.port = free_port()
        self.config_path = tmp_path / "config.json"
        write_json(self.config_path, {
            "api_keys": [self.API_KEY],
            "upstream": {"base_url": self.emulator.url, **(upstream or {})},
            "server": {"host": "127.0.0.1", "port": self.port, **(server or {})},
            "refresher": {"tick_seconds": 0.05, "retry_base_seconds": 0.2, "retry_max_seconds": 1},
            "accounts": [{"name": f"acct{i}", "refresh_token": a["refresh_token"], "access_token": a["access_token"]}
                         for i, a in enumerate(self.accounts)],
        })
        self.url = f"http://127.0.0.1:{self.port}"
        self.server_log = tmp_path / "server.log"
        self.server = None
        self.log_level = log_level
        self.server_env = server_env or {}
        self.start_server()
        self.refresher = spawn("refresher", "--config", str(self.config_path)) if refresher else None
        if refresher:
            # The server waits for a renewal only once the refresher's heartbeat says it is alive.
            from common.heartbeat import refresher_alive
            wait_until(lambda: refresher_alive(str(self.config_path)), 30, "the refresher's first heartbeat")

    def start_server(self) -> None:
        self._log_file = open(self.server_log, "ab")
        self.server = spawn("server", "--config", str(self.config_path), "--log-level", self.log_level,
                            env=child_env(**self.server_env), stderr=self._log_file)
        wait_until(self._healthy, 30, "the server to answer /health")

    def _healthy(self) -> bool:
        if self.server.poll() is not None:
            raise AssertionError(f"the server exited: {self.server_log.read_text()}")
        try:
            return requests.get(self.url + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def headers(self, key: str | None = None) -> dict:
        return {"Authorization": f"Bearer {key or self.API_KEY}"}

    def post(self, body: object, path: str = "/v1/chat/completions", **kwargs) -> requests.Response:
        data = body if isinstance(body, (bytes, str)) else orjson.dumps(body)
        headers = {**self.headers(), "Content-Type": "application/json", **kwargs.pop("headers", {})}
        return requests.post(self.url + path, data=data, headers=headers, timeout=kwargs.pop("timeout", 60), **kwargs)

    def close(self) -> None:
        if self.refresher is not None:
            stop(self.refresher)
        if self.server is not None:
            stop(self.server)
            self._log_file.close()
        self.emulator.close()


# Upstream failures the server reports deliberately (OpenAI error codes), as opposed to its own faults.
UPSTREAM_CODES = frozenset({"upstream_error", "upstream_timeout", "upstream_auth_failed", "rate_limit_exceeded",
                            "no_available_account", "upstream_overloaded"})


def open_fds(pid: int) -> int:
    """How many file descriptors a process holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid: int) -> int:
    """A process's resident memory in KiB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
