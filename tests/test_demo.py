"""`make demo` works from a clean checkout and its printed curl command gets an answer."""

from __future__ import annotations

import shlex
import shutil
import signal
import subprocess
import sys

import orjson
import pytest

from tests.helpers import ROOT, child_env, wait_until


def test_makefile_demo_target_runs_this_module():
    assert "-m tests.demo" in open(f"{ROOT}/Makefile").read()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_demo_answers_its_printed_curl_command():
    proc = subprocess.Popen([sys.executable, "-m", "tests.demo", "--port", "0"], cwd=ROOT, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    try:
        def read_until_ready() -> bool:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "the demo exited early:\n" + "".join(lines)
            lines.append(line)
            return "Press Ctrl-C" in line
        wait_until(read_until_ready, 120, "the demo to be ready")
        output = "".join(lines)
        assert "The server just answered: 收到 🌙 turn 1: Hello, Kimi!" in output
        curl = next(line for line in lines if line.startswith("    $ curl "))[6:].strip()
        result = subprocess.run(shlex.split(curl), capture_output=True, timeout=60)
        assert orjson.loads(result.stdout)["choices"][0]["message"]["content"] == "收到 🌙 turn 1: Hello, Kimi!"
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0 and "demo stopped" in rest
