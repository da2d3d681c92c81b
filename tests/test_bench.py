"""The benchmark's own baselines read whole answers: a figure is only as good as what it counts."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from bench import loadgen
from bench.run import BENCH_ANSWER, _connect_call, direct, shape_stream, through_server
from common.connect_frames import END_STREAM, encode
from tests.helpers import Stack, free_port, spawn, stop


@pytest.mark.parametrize("protocol", ["rest", "connect"])
def test_both_paths_of_the_streaming_benchmark_get_whole_answers(tmp_path, protocol):
    stack = Stack(tmp_path, protocol=protocol)
    try:
        shape_stream(stack, 3, 0)
        for run in (direct, through_server):
            summary = run(stack, 2, 4)
            assert (summary["requests"], summary["errors"]) == (4, 0), run.__name__
            assert summary["ttft_p50_ms"] <= summary["p50_ms"]
    finally:
        stack.close()


def test_the_connect_dialect_reads_text_done_and_end_of_stream_errors():
    def text(piece: str) -> bytes:
        return encode({"op": "append", "mask": "block.text.content", "block": {"id": "0_1", "text": {"content": piece}}})

    whole = loadgen.Result(status=200)
    loadgen._parse(text("Hel") + text("lo") + encode({"done": {}}) + encode({}, END_STREAM), "connect", whole)
    assert (whole.text, whole.complete, whole.error) == ("Hello", True, "")

    cut = loadgen.Result(status=200)
    loadgen._parse(text("Hel") + encode({"error": {"code": "internal", "message": "x"}}, END_STREAM), "connect", cut)
    assert (cut.text, cut.complete, cut.error) == ("Hel", False, "internal")


def test_the_connect_baseline_answers_with_the_benchmark_text(tmp_path):
    stack = Stack(tmp_path, protocol="connect")
    try:
        shape_stream(stack, 3, 0)
        [result] = asyncio.run(loadgen.run(lambda i: _connect_call(stack, i), 1, count=1))
        assert result.complete and result.text == BENCH_ANSWER
        assert result.first_token is not None
    finally:
        stack.close()


def test_the_byte_relay_passes_whole_answers_through(tmp_path):
    stack = Stack(tmp_path)
    port = free_port()
    relay = spawn("bench.relay", str(port), str(stack.emulator.port), stdout=subprocess.PIPE)
    try:
        assert relay.stdout.readline().strip() == b"ready"
        shape_stream(stack, 3, 0)
        summary = direct(stack, 3, 9, port=port)
        assert (summary["requests"], summary["errors"]) == (9, 0)
        stop(relay)
        assert direct(stack, 1, 2, port=port)["errors"] == 2   # so the answers above did come through the relay
    finally:
        stop(relay)
        stack.close()
