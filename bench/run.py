"""make bench: kimi-bridge against the direct-upstream baseline, measured in the same run.

python -m bench.run [--only NAME ...] [--json PATH]
Each benchmark prints a Markdown table; --json keeps the raw figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import requests

from bench import loadgen
from common.connect_frames import encode
from server.core.models import resolve_model
from server.upstream.kimi.connect.protocol import CHAT_PATH, chat_request
from server.upstream.turn import ChatTarget, TurnRequest
from tests.helpers import (Stack, child_env, cpu_seconds, free_port, read_json, rss_kb, spawn, stop, wait_until,
                           write_json)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = next(int(line.split()[1]) // 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return f"{os.cpu_count()} cores ({cpu}), {mem} MiB RAM, Linux {platform.release()}, Python {platform.python_version()}"


def _summary(results: list, wall: float) -> dict:
    ok = [r for r in results if r.complete and not r.error]
    totals = [r.total * 1000 for r in ok]
    firsts = [r.first_token * 1000 for r in ok if r.first_token is not None]
    return {"requests": len(results), "errors": len(results) - len(ok), "throughput": len(ok) / wall,
            "p50_ms": loadgen.percentile(totals, 50), "p99_ms": loadgen.percentile(totals, 99),
            "ttft_p50_ms": loadgen.percentile(firsts, 50), "ttft_p99_ms": loadgen.percentile(firsts, 99)}


async def _timed(coro) -> tuple[list, float]:
    start = time.perf_counter()
    results = await coro
    return results, time.perf_counter() - start


def completion_call(stack: Stack, i: int, stream: bool = True, timeout: float = 120, prompt: str = "b"):
    """The load generator's request number `i` to kimi-bridge's chat completions, asking `prompt` + i."""
    body = orjson.dumps({"model": "kimi", "stream": stream, "messages": [{"role": "user", "content": f"{prompt}{i}"}]})
    return loadgen.request("127.0.0.1", stack.port, "/v1/chat/completions", body, stack.headers(), dialect="openai",
                           timeout=timeout)


def through_server(stack: Stack, concurrency: int, count: int, stream: bool = True) -> dict:
    results, wall = asyncio.run(_timed(loadgen.run(lambda i: completion_call(stack, i, stream), concurrency,
                                                   count=count)))
    return _summary(results, wall)


def direct(stack: Stack, concurrency: int, count: int, port: int | None = None) -> dict:
    """The baseline: the same load sent straight to the emulator's completion endpoint (one chat per worker);
    `port` sends it through something listening there instead (the byte relay)."""
    if stack.protocol == "connect":
        return _direct_connect(stack, concurrency, count, port)
    access = stack.accounts[0]["access_token"]
    auth = {"Authorization": f"Bearer {access}"}
    chats = [requests.post(stack.emulator.url + "/api/chat", json={"name": "bench"}, headers=auth, timeout=10).json()["id"]
             for _ in range(concurrency)]
    port = port or stack.emulator.port

    async def go():
        pool: asyncio.Queue = asyncio.Queue()
        for chat in chats:
            pool.put_nowait(chat)

        async def make(i: int):
            chat = await pool.get()
            try:
                body = orjson.dumps({"messages": [{"role": "user", "content": f"b{i}"}], "kimiplus_id": "kimi"})
                return await loadgen.request("127.0.0.1", port, f"/api/chat/{chat}/completion/stream", body, auth,
                                             dialect="kimi", timeout=120)
            finally:
                pool.put_nowait(chat)
        return await _timed(loadgen.run(make, concurrency, count=count))
    results, wall = asyncio.run(go())
    return _summary(results, wall)


def _direct_connect(stack: Stack, concurrency: int, count: int, port: int | None) -> dict:
    """Connect's completion endpoint is the Chat RPC, which makes its chat itself: the very call kimi-bridge sends."""
    results, wall = asyncio.run(_timed(loadgen.run(lambda i: _connect_call(stack, i, port), concurrency, count=count)))
    return _summary(results, wall)


def _connect_call(stack: Stack, i: int, port: int | None = None):
    headers = {"Authorization": f"Bearer {stack.accounts[0]['access_token']}",
               "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1"}
    body = encode(chat_request(TurnRequest(f"b{i}", resolve_model("kimi")), ChatTarget()))
    return loadgen.request("127.0.0.1", port or stack.emulator.port, CHAT_PATH, body, headers, dialect="connect",
                           timeout=120)


def _row(name: str, base: dict, ours: dict) -> str:
    return (f"| {name} | {base['throughput']:.1f} | {ours['throughput']:.1f} | **{ours['throughput'] / base['throughput']:.2f}x** "
            f"| {base['p50_ms']:.1f} / {base['p99_ms']:.1f} | {ours['p50_ms']:.1f} / {ours['p99_ms']:.1f} "
            f"| {ours['p50_ms'] - base['p50_ms']:+.1f} | {base['errors']}/{ours['errors']} |")


# Both paths must get the same events: a fixed answer (the default echoes the prompt and the chat's
# history, which differ between a fresh chat and the baseline's reused ones) and no first-answer
# `rename` event (only fresh chats get one).
BENCH_ANSWER = "a streamed benchmark answer " * 8


def shape_stream(stack: Stack, chunks: int, event_delay: float, **more) -> None:
    """Every answer: `chunks` cmpl events of the same fixed text, `event_delay` s apart."""
    stack.emulator.admin("stream", {"chunks": chunks, "event_delay": event_delay, "answer": BENCH_ANSWER,
                                    "rename": False, **more})


HEADER = ("| load | direct req/s | kimi-bridge req/s | ratio | direct p50 / p99 ms | kimi-bridge p50 / p99 ms "
          "| p50 added ms | errors (direct/bridge) |\n|---|---|---|---|---|---|---|---|")


STREAMING_ROUNDS = 3   # each load runs direct then through kimi-bridge this many times; rows show every round


def bench_streaming(tmp: Path, report: dict) -> str:
    """Both protocols: REST needs a create-chat call before each completion, Connect's Chat call makes its own chat."""
    rows = []
    summary = ["| protocol | load | ratio per round | median ratio | median p50 added ms |", "|---|---|---|---|---|"]
    for protocol in ("rest", "connect"):
        stack = Stack(tmp / f"streaming-{protocol}", protocol=protocol)
        try:
            shape_stream(stack, 20, 0.01)
            through_server(stack, 10, 50)   # warm up
            for concurrency, count in ((1, 40), (50, 500), (200, 1200)):
                rounds = []
                for n in range(STREAMING_ROUNDS):
                    base, ours = direct(stack, concurrency, count), through_server(stack, concurrency, count)
                    rounds.append({"direct": base, "bridge": ours})
                    rows.append(_row(f"{protocol}, c={concurrency}, {count} streams, round {n + 1}", base, ours))
                report[f"streaming_{protocol}_c{concurrency}"] = rounds
                ratios = [r["bridge"]["throughput"] / r["direct"]["throughput"] for r in rounds]
                added = [r["bridge"]["p50_ms"] - r["direct"]["p50_ms"] for r in rounds]
                summary.append(f"| {protocol} | c={concurrency} | {', '.join(f'{x:.2f}x' for x in ratios)} "
                               f"| **{statistics.median(ratios):.2f}x** | {statistics.median(added):+.1f} |")
        finally:
            stack.close()
    return "\n".join([HEADER, *rows, "", *summary])


def bench_floor(tmp: Path, report: dict) -> str:
    """What any proxy costs here: the c=200 streaming load direct, through a byte relay, and through kimi-bridge."""
    stack = Stack(tmp / "floor")
    relay_port = free_port()
    relay = spawn("bench.relay", str(relay_port), str(stack.emulator.port), stdout=subprocess.PIPE)
    try:
        if relay.stdout.readline().strip() != b"ready":
            raise RuntimeError("the byte relay did not start")
        shape_stream(stack, 20, 0.01)
        through_server(stack, 10, 50)   # warm up
        rows, rounds = [], []
        for n in range(STREAMING_ROUNDS):
            base = direct(stack, 200, 1200)
            paths = {"direct": base, "byte relay": direct(stack, 200, 1200, port=relay_port),
                     "kimi-bridge (REST)": through_server(stack, 200, 1200)}
            rounds.append(paths)
            rows += [f"| {n + 1} | {name} | {r['throughput']:.1f} | **{r['throughput'] / base['throughput']:.2f}x** "
                     f"| {r['p50_ms']:.1f} | {r['ttft_p50_ms']:.1f} | {r['p50_ms'] - r['ttft_p50_ms']:.1f} "
                     f"| {r['errors']} |"
                     for name, r in paths.items()]
        report["floor_c200"] = rounds
        return "\n".join(["| round | path | req/s | ratio | p50 ms | TTFT p50 ms | p50 − TTFT p50 ms | errors |",
                          "|---|---|---|---|---|---|---|---|", *rows])
    finally:
        stop(relay)
        stack.close()


def bench_overhead(tmp: Path, report: dict, processes: int = 1, label: str = "overhead") -> str:
    stack = Stack(tmp / f"{label}-{processes}", server={"processes": processes})
    try:
        shape_stream(stack, 4, 0)
        through_server(stack, 50, 300)   # warm up
        base, ours = direct(stack, 50, 2000), through_server(stack, 50, 2000)
        report[f"{label}_p{processes}"] = {"direct": base, "bridge": ours}
        return _row(f"c=50, 2000 streams, {processes} server process(es)", base, ours)
    finally:
        stack.close()


def bench_first_token(tmp: Path, report: dict) -> str:
    rows = ["| protocol | upstream calls before the first token | direct TTFT p50 ms | kimi-bridge TTFT p50 / p99 ms "
            "| target (calls x 50 ms + 10 ms) |", "|---|---|---|---|---|"]
    for protocol, calls in (("rest", 2), ("connect", 1)):
        stack = Stack(tmp / f"ttft-{protocol}", protocol=protocol)
        try:
            shape_stream(stack, 4, 0)
            stack.emulator.admin("settings", {"latency": 0.05})
            base = direct(stack, 1, 20) if protocol == "rest" else None
            ours = through_server(stack, 1, 20)
            report[f"ttft_{protocol}"] = {"direct": base, "bridge": ours}
            direct_text = f"{base['ttft_p50_ms']:.1f}" if base else "(same emulator)"
            rows.append(f"| {protocol} | {calls} | {direct_text} | {ours['ttft_p50_ms']:.1f} / {ours['ttft_p99_ms']:.1f} "
                        f"| {calls * 50 + 10} |")
        finally:
            stack.close()
    return "\n".join(rows)


def bench_memory(tmp: Path, report: dict, streams: int = 1000) -> str:
    stack = Stack(tmp / "memory", upstream={"idle_timeout": 600}, server={"keepalive_seconds": 300})
    try:
        through_server(stack, 10, 50)   # warm up
        idle = rss_kb(stack.server.pid)
        shape_stream(stack, 4, 0, stall_after=1, stall_seconds=600)

        async def hold():
            tasks = [asyncio.ensure_future(completion_call(stack, i, timeout=600)) for i in range(streams)]
            deadline = time.monotonic() + 300
            while stack.emulator.stats()["open_streams"] < streams and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            opened = stack.emulator.stats()["open_streams"]
            loaded = rss_kb(stack.server.pid)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return opened, loaded
        opened, loaded = asyncio.run(hold())
        per_stream = (loaded - idle) / max(opened, 1)
        report["memory"] = {"streams": opened, "idle_rss_kb": idle, "loaded_rss_kb": loaded, "kb_per_stream": per_stream}
        return (f"| open streams | server RSS idle | server RSS with the streams open | per stream | target |\n"
                f"|---|---|---|---|---|\n| {opened} | {idle / 1024:.1f} MiB | {loaded / 1024:.1f} MiB "
                f"| **{per_stream:.1f} KB** | <= 100 KB |")
    finally:
        stack.close()


def bench_refresher(tmp: Path, report: dict) -> str:
    from tests.helpers import Emulator
    rows = ["| measure | figure |", "|---|---|"]
    emulator = Emulator(tmp, access_ttl=900)
    try:
        path = tmp / "refresher-idle.json"
        write_json(path, {"api_keys": ["k"], "upstream": {"base_url": emulator.url},
                          "accounts": [{"name": f"a{i}", **{k: v for k, v in emulator.new_account().items()
                                                             if k != "user_id"}} for i in range(5)]})
        proc = spawn("refresher", "--config", str(path), env=child_env())
        time.sleep(3)   # a benchmark's settle time, not a race
        before, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(30)
        used, elapsed = cpu_seconds(proc.pid) - before, time.monotonic() - t0
        stop(proc)
        report["refresher_idle_cpu_percent"] = 100 * used / elapsed
        ticks = used * os.sysconf("SC_CLK_TCK")
        rows.append(f"| idle CPU, 5 accounts none due, default 5 s tick, 30 s | **{100 * used / elapsed:.3f} %** "
                    f"({ticks:.0f} clock ticks of {1000 / os.sysconf('SC_CLK_TCK'):.0f} ms in {elapsed:.0f} s) |")
    finally:
        emulator.close()
    for tick in (5.0, 1.0):
        emulator = Emulator(tmp, access_ttl=20)
        try:
            path = tmp / f"refresher-lag-{tick}.json"
            write_json(path, {"api_keys": ["k"], "upstream": {"base_url": emulator.url},
                              "refresher": {"tick_seconds": tick},
                              "accounts": [{"name": "a", "refresh_token": emulator.new_account()["refresh_token"]}]})
            proc = spawn("refresher", "--config", str(path), env=child_env())
            lags = []
            try:
                first = wait_until(lambda: read_json(path)["accounts"][0].get("access_token"), 30, "first token")
                for _ in range(3):
                    from common.jwt_claims import decode_claims
                    claims = decode_claims(first)
                    due = claims.exp - min(180, (claims.exp - claims.iat) / 2)
                    new = wait_until(lambda f=first: (t := read_json(path)["accounts"][0]["access_token"]) != f and t,
                                     60, "the next refresh")
                    lags.append(time.time() - due)
                    first = new
            finally:
                stop(proc)
            report[f"refresher_lag_tick{tick}"] = lags
            rows.append(f"| margin reached -> new token in the file, tick {tick:g} s (3 refreshes) "
                        f"| {', '.join(f'{x:.2f} s' for x in lags)} (the exp claim has 1 s resolution) |")
        finally:
            emulator.close()
    return "\n".join(rows)


BENCHES = {"streaming": bench_streaming, "floor": bench_floor, "overhead": bench_overhead,
           "first_token": bench_first_token, "memory": bench_memory, "scaling": None, "refresher": bench_refresher}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(BENCHES), help="run only these")
    parser.add_argument("--json", help="write the raw figures here")
    args = parser.parse_args()
    report: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    print(f"# kimi-bridge benchmarks\n\nMachine: {report['machine']}\nStarted: {report['started']}\n", flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name in args.only or list(BENCHES):
            print(f"## {name}\n", flush=True)
            if name == "scaling":
                table = "\n".join([HEADER, bench_overhead(tmp, report, 1, "scaling"), bench_overhead(tmp, report, 2, "scaling")])
            else:
                table = BENCHES[name](tmp, report)
            print(table + "\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
