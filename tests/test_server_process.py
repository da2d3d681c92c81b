"""How the server process runs: on uvloop unless told otherwise, with its open-file limit raised."""

from __future__ import annotations

import resource
import subprocess

import pytest
import requests

from tests.helpers import Stack, free_port, spawn, stop, wait_until


@pytest.mark.parametrize("uvloop, expected", [(True, "uvloop"), (False, "standard asyncio")])
def test_the_configured_event_loop_serves_answers(tmp_path, uvloop, expected):
    stack = Stack(tmp_path, server={"uvloop": uvloop})
    try:
        wait_until(lambda: "event loop" in stack.server_log.read_text(), 30, "the event loop log line")
        assert f"serving on the {expected} event loop" in stack.server_log.read_text()
        for stream in (False, True):
            r = stack.post({"model": "kimi", "stream": stream, "messages": [{"role": "user", "content": "loop"}]})
            assert r.status_code == 200 and "loop" in r.text
    finally:
        stack.close()


def test_the_server_raises_its_open_file_limit_to_the_hard_limit(tmp_path):
    """Two descriptors per open stream: a default soft limit of 1024 would refuse clients at ~500 streams."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 256
    if hard != resource.RLIM_INFINITY and hard <= low:
        pytest.skip("the hard limit is too low to tell a raise from no raise")
    stack = Stack(tmp_path)
    port = free_port()
    server = spawn("server", "--config", str(stack.config_path), "--port", str(port), stderr=subprocess.DEVNULL,
                   preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard)))
    try:
        wait_until(lambda: _answers(port), 30, "the second server to answer /health")
        line = next(line for line in open(f"/proc/{server.pid}/limits") if line.startswith("Max open files"))
        expected = str(1 << 20) if hard == resource.RLIM_INFINITY else str(hard)
        assert line.split()[3] == expected, line
    finally:
        stop(server)
        stack.close()


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False
