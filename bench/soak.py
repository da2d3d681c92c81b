"""make soak: the long robustness runs (minutes each); CI runs the short versions in tests/test_robustness.py.

python -m bench.soak [--minutes 5] [--clients 500] [--chaos-minutes 5]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
import time
from pathlib import Path

from bench import loadgen
from bench.run import completion_call, shape_stream
from tests.helpers import UPSTREAM_CODES, Stack, open_fds, rss_kb
from tests.test_chaos import check_report, run_chaos

def _maker(stack: Stack, timeout: float = 120):
    """Requests of which one in four is not streamed."""
    return lambda i: completion_call(stack, i, stream=i % 4 != 0, timeout=timeout)


def settled_fds(pid: int, limit: int, timeout: float = 30.0) -> int:
    """The server's descriptor count once it is at most `limit`, or whatever it is after `timeout` s.

    Closing connections and idle kept-alive upstream connections (upstream.pool_idle_seconds) take a
    moment to go; a leak never does.
    """
    deadline = time.monotonic() + timeout
    while (count := open_fds(pid)) > limit and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def load(tmp: Path, clients: int, minutes: float) -> bool:
    stack = Stack(tmp / "load")
    try:
        pid = stack.server.pid
        shape_stream(stack, 20, 0.01)
        asyncio.run(loadgen.run(_maker(stack), clients, count=clients * 2))   # warm up
        fd0, rss0 = open_fds(pid), rss_kb(pid)
        results = asyncio.run(loadgen.run(_maker(stack), clients, duration=minutes * 60))
        errors = [r for r in results if not r.complete or r.error]
        fd1, rss1 = settled_fds(pid, fd0 + 2), rss_kb(pid)
        growth = (rss1 - rss0) / rss0 * 100
        ok = not errors and growth < 10 and fd1 <= fd0 + 2
        print(f"| load: {clients} concurrent streaming clients, {minutes:g} min | {len(results)} requests, "
              f"{len(errors)} errors | RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB ({growth:+.1f} %) "
              f"| fds {fd0} -> {fd1} | {'PASS' if ok else 'FAIL'} |", flush=True)
        return ok
    finally:
        stack.close()


def faults(tmp: Path, count: int) -> bool:
    stack = Stack(tmp / "faults", upstream={"idle_timeout": 1.0}, server={"keepalive_seconds": 0.3,
                                                                         "max_attempts": 2})
    try:
        pid = stack.server.pid
        fd0 = open_fds(pid)
        stack.emulator.admin("settings", {"chaos_rate": 0.6, "chaos_seed": int(time.time())})
        results = asyncio.run(loadgen.run(_maker(stack, timeout=20), 20, count=count))
        hung = [r for r in results if r.error == "client timeout"]
        bad = [r for r in results if not (r.complete and not r.error) and r.error not in UPSTREAM_CODES]
        stack.emulator.admin("settings", {"chaos_rate": 0})
        fd1 = settled_fds(pid, fd0 + 2)
        answered = sum(1 for r in results if r.complete and not r.error)
        ok = not hung and not bad and fd1 <= fd0 + 2
        print(f"| faults: {count} requests, random upstream faults | {answered} answered, "
              f"{len(results) - answered} OpenAI errors, {len(hung)} hung, {len(bad)} malformed | fds {fd0} -> {fd1} "
              f"| {'PASS' if ok else 'FAIL'} |", flush=True)
        return ok
    finally:
        stack.close()


def _closed_by(sock: socket.socket, deadline: float) -> bool:
    """True once the server has closed the connection (whatever it said first), False at the deadline."""
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def slow_clients(tmp: Path, slow: int) -> bool:
    stack = Stack(tmp / "slow", server={"idle_connection_timeout": 5, "body_timeout": 5})
    try:
        shape_stream(stack, 4, 0)
        unloaded = asyncio.run(loadgen.run(_maker(stack), 10, count=400))
        base = loadgen.percentile([r.total for r in unloaded], 99)
        sockets = []
        for i in range(slow):
            sock = socket.create_connection(("127.0.0.1", stack.port))
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" if i % 2 else
                         b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 999\r\n\r\n{")
            sockets.append(sock)
        loaded = asyncio.run(loadgen.run(_maker(stack), 10, count=400))
        p99 = loadgen.percentile([r.total for r in loaded], 99)
        deadline = time.monotonic() + 30
        closed = all(_closed_by(sock, deadline) for sock in sockets)
        for sock in sockets:
            sock.close()
        ok = p99 < 2 * base and closed
        print(f"| slow clients: {slow} slow-header/slow-body connections | normal p99 {base * 1000:.1f} ms unloaded, "
              f"{p99 * 1000:.1f} ms meanwhile ({p99 / base:.2f}x) | all closed by the server: {closed} "
              f"| {'PASS' if ok else 'FAIL'} |", flush=True)
        return ok
    finally:
        stack.close()


def chaos(tmp: Path, minutes: float) -> bool:
    """The long chaos run of tests/test_chaos.py: SIGKILLs, stale editor saves, a client throughout."""
    report = run_chaos(tmp / "chaos", minutes * 60)
    try:
        check_report(report)
        ok, why = True, ""
    except AssertionError as exc:
        ok, why = False, f" ({exc})"
    print(f"| chaos: {minutes:g} min of SIGKILLs and stale editor saves | {report.line()} | | "
          f"{'PASS' if ok else 'FAIL' + why} |", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--fault-requests", type=int, default=1000)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--chaos-minutes", type=float, default=5)
    args = parser.parse_args()
    print("| suite | outcome | resources | | verdict |\n|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "chaos").mkdir()
        results = [faults(tmp, args.fault_requests), slow_clients(tmp, args.slow),
                   load(tmp, args.clients, args.minutes), chaos(tmp, args.chaos_minutes)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
