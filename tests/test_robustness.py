"""Robustness, CI-sized: random upstream faults, sustained load, slow clients, fuzzing, schema-driven fuzzing.

The long versions run with `make soak` (bench/soak.py)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import string
import subprocess
import sys

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import loadgen
from bench.run import completion_call
from tests.helpers import UPSTREAM_CODES, Stack, open_fds, rss_kb, wait_until


async def _load(stack: Stack, concurrency: int, count: int | None = None, duration: float | None = None,
                timeout: float = 60) -> list:
    def make(i: int):
        return completion_call(stack, i, stream=i % 3 != 0, timeout=timeout, prompt="load ")
    return await loadgen.run(make, concurrency, count=count, duration=duration)


def test_random_upstream_faults_end_every_request_cleanly(tmp_path):
    stack = Stack(tmp_path, upstream={"idle_timeout": 1.0}, server={"keepalive_seconds": 0.3, "max_attempts": 2})
    try:
        pid = stack.server.pid
        baseline = open_fds(pid)
        stack.emulator.admin("settings", {"chaos_rate": 0.6, "chaos_seed": 7})
        # Timeouts: two attempts of at most ~1 s idle each, so 20 s means "hung".
        results = asyncio.run(_load(stack, concurrency=20, count=1000, timeout=20))
        assert len(results) == 1000
        answered = errors = 0
        for i, result in enumerate(results):
            assert result.error != "client timeout", "a request hung past the configured timeouts"
            if result.complete and not result.error:
                answered += 1
            else:
                assert result.error in UPSTREAM_CODES, (result.status, result.error)
                errors += 1
        assert answered > 200 and errors > 50, (answered, errors)   # the faults really happened
        stack.emulator.admin("settings", {"chaos_rate": 0})
        wait_until(lambda: open_fds(pid) <= baseline + 2, 30, "file descriptors back to the baseline")
    finally:
        stack.close()


def test_sustained_concurrent_streams_keep_memory_and_descriptors_flat(tmp_path):
    stack = Stack(tmp_path)
    try:
        pid = stack.server.pid
        stack.emulator.admin("stream", {"event_delay": 0.005, "chunks": 8})
        warm = asyncio.run(_load(stack, concurrency=100, count=300))
        assert all(r.complete and not r.error for r in warm)
        baseline_fds, baseline_rss = open_fds(pid), rss_kb(pid)
        results = asyncio.run(_load(stack, concurrency=100, duration=15))
        failures = [(r.status, r.error) for r in results if not r.complete or r.error]
        assert not failures and len(results) > 300
        assert all(r.text.startswith("收到 🌙 turn 1: load ") for r in results)
        wait_until(lambda: open_fds(pid) <= baseline_fds + 2, 30, "file descriptors back to the baseline")
        assert rss_kb(pid) < baseline_rss * 1.10, (baseline_rss, rss_kb(pid))
    finally:
        stack.close()


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except BlockingIOError:
        return False


def test_slow_header_and_slow_body_connections_are_closed(tmp_path):
    stack = Stack(tmp_path, server={"idle_connection_timeout": 1, "body_timeout": 1})
    try:
        slow_header = socket.create_connection(("127.0.0.1", stack.port))
        slow_header.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        slow_body = socket.create_connection(("127.0.0.1", stack.port))
        slow_body.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"mo")
        idle = socket.create_connection(("127.0.0.1", stack.port))
        for sock in (slow_header, slow_body, idle):
            sock.setblocking(False)
        # Meanwhile, normal requests are served.
        assert stack.post({"model": "kimi", "messages": [{"role": "user", "content": "x"}]}).status_code == 200
        for sock in (slow_header, slow_body, idle):
            wait_until(lambda s=sock: _closed_by_server(s), 30, "the server to close a slow connection")
            sock.close()
    finally:
        stack.close()


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("fuzz"))
    # Kimi follows a response_format's instruction ({} fits json_object and every schema the API documents);
    # the echo would not, and a structured answer that stays invalid is rightly a 502.
    stack.emulator.script(rules=[{"contains": "Answer with exactly one JSON", "answer": "{}"}])
    yield stack
    stack.close()


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                  max_size=4), max_leaves=12)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", "x", 3]),
                                 "content": st.one_of(st.text(max_size=30), st.none(), JSON)},
                                optional={"name": JSON, "extra": JSON})
BODY = st.one_of(
    JSON,
    st.fixed_dictionaries({"model": st.sampled_from(["kimi", "kimi-search", "moonshot-v1", "nope", ""]),
                           "messages": st.lists(MESSAGE, max_size=3)},
                          optional={"stream": st.one_of(st.booleans(), JSON), "n": JSON, "temperature": JSON,
                                    "stream_options": JSON, "max_tokens": JSON, "conversation_id": JSON}))
# Header values an HTTP client can send: visible ASCII and Latin-1 bytes, spaces only inside.
HEADER_VALUE = st.text(st.characters(codec="latin-1", categories=("L", "N", "P", "S")), min_size=1, max_size=40).map(
    lambda t: t.encode("latin-1"))


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "120")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(body=BODY, auth=st.one_of(st.just(b"Bearer " + Stack.API_KEY.encode()), HEADER_VALUE),
       extra=st.dictionaries(st.text(string.ascii_letters + "-", min_size=1, max_size=12), HEADER_VALUE, max_size=3))
def test_fuzzed_bodies_and_headers_never_get_a_server_error(fuzz_stack, body, auth, extra):
    headers = {**{k: v for k, v in extra.items() if k.lower() not in ("content-length", "host",
                                                                     "transfer-encoding", "connection")},
               "Authorization": auth, "Content-Type": b"application/json"}
    response = requests.post(fuzz_stack.url + "/v1/chat/completions", data=json.dumps(body), headers=headers,
                             timeout=60)
    assert response.status_code < 500 or response.json()["error"]["code"] in UPSTREAM_CODES, response.text
    if response.status_code >= 400:
        assert response.headers.get("Content-Type", "").startswith("application/json"), (
            response.status_code, response.text, headers)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_schemathesis_finds_no_server_error(fuzz_stack):
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "st"), "run", fuzz_stack.url + "/openapi.json",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                     "response_schema_conformance,unsupported_method",
         "-H", f"Authorization: Bearer {Stack.API_KEY}", "-n", "25", "--request-timeout", "30", "--seed", "1"],
        cwd=fuzz_stack.tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout
