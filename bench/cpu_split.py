"""python -m bench.cpu_split [CONCURRENCY] [COUNT] [CHUNKS] [EVENT_DELAY] [rest|connect]: CPU per answer per process.

Runs the streaming load direct and through kimi-bridge twice each and prints, per run, the
throughput, latency and the CPU milliseconds per answer spent by the emulator, the server and
the load generator (this process): where a ratio against the baseline goes.
"""

from __future__ import annotations

import resource
import sys
import tempfile
from pathlib import Path

from bench.run import direct, shape_stream, through_server
from tests.helpers import Stack, cpu_seconds


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    concurrency, count = int(argv[0]) if argv else 50, int(argv[1]) if len(argv) > 1 else 500
    chunks, delay = int(argv[2]) if len(argv) > 2 else 20, float(argv[3]) if len(argv) > 3 else 0.01
    protocol = argv[4] if len(argv) > 4 else "rest"
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp), protocol=protocol)
        try:
            shape_stream(stack, chunks, delay)
            through_server(stack, 10, 50)   # warm up
            for name, run in (("direct", direct), ("bridge", through_server)) * 2:
                before = cpu_seconds(stack.emulator.proc.pid), cpu_seconds(stack.server.pid), _own_cpu()
                r = run(stack, concurrency, count)
                after = cpu_seconds(stack.emulator.proc.pid), cpu_seconds(stack.server.pid), _own_cpu()
                used = [1000 * (a - b) / count for a, b in zip(after, before)]
                print(f"{name}: {r['throughput']:.1f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
                      f"TTFT p50 {r['ttft_p50_ms']:.1f} ms, errors {r['errors']} | CPU ms per answer: emulator "
                      f"{used[0]:.2f}, server {used[1]:.2f}, load generator {used[2]:.2f}", flush=True)
        finally:
            stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
