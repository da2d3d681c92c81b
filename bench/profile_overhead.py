"""py-spy on the server during the overhead load: python -m bench.profile_overhead OUT.txt (raw folded stacks)."""

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from bench.run import shape_stream, through_server
from tests.helpers import Stack
tmp = Path(tempfile.mkdtemp())
stack = Stack(tmp / "p")
try:
    shape_stream(stack, 4, 0)
    through_server(stack, 50, 300)
    spy = subprocess.Popen(["py-spy", "record", "-o", sys.argv[1] if len(sys.argv) > 1 else "profile.txt", "-f", "raw", "-r", "200",
                            "-p", str(stack.server.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)   # py-spy attaches; not a race: the load below is what it samples
    through_server(stack, 50, 3000)
    spy.send_signal(2); spy.wait(30)
finally:
    stack.close()
