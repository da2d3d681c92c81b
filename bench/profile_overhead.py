"""py-spy on the server during the overhead load: python -m bench.profile_overhead OUT.txt (raw folded stacks)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.run import shape_stream, through_server
from tests.helpers import Stack


def main(out: str) -> int:
    """Warm a stack up, then sample its server (200 Hz) while it serves 3,000 answers at c=50."""
    stack = Stack(Path(tempfile.mkdtemp()) / "profile")
    try:
        shape_stream(stack, 4, 0)
        through_server(stack, 50, 300)
        spy = subprocess.Popen(["py-spy", "record", "-o", out, "-f", "raw", "-r", "200", "-p", str(stack.server.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)   # py-spy attaches; not a race: the load below is what it samples
        through_server(stack, 50, 3000)
        spy.send_signal(2)
        return spy.wait(30)
    finally:
        stack.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "profile.txt"))
