"""python -m bench.tool_parser [REPEATS]: the tool-call parser's CPU per answer, tools on vs off.

Tools off, an answer's chunks are only joined ("join"), or each becomes a TextDelta as the event stream
without a parser does ("events"); tools on, every chunk goes through a ToolCallParser ("parser").
Each figure is the median over REPEATS timed rounds of 100 answers (time.perf_counter), the three
interleaved round by round, so the ratios hold even on a machine whose speed moves from minute to minute.
"""

from __future__ import annotations

import statistics
import sys
import time

import orjson

from server.core.events import TextDelta
from server.emulation.tool_parser import ToolCallParser

TOOLS = ("get_weather", "search_web", "read_file")
ROUND = 100   # answers per timed round: a round is long enough for perf_counter, short enough to repeat often

_PARAGRAPH = ("Here is what I found about the question. The first option is simpler to run, but the second "
              "one scales better when the load grows; in practice most teams start with the first and move. ")


def _chunks(text: str, count: int) -> list[str]:
    """The text cut into `count` near-equal chunks, as the upstream streams it."""
    size = -(-len(text) // count)
    return [text[i:i + size] for i in range(0, len(text), size)]


def _call(name: str, args: dict) -> str:
    return "<tool_call>" + orjson.dumps({"name": name, "arguments": args}).decode() + "</tool_call>"


ANSWERS = {
    "text, 2 KB in 100 chunks": _chunks((_PARAGRAPH * 11)[:2048], 100),
    "text with '<' (code), 2 KB in 100 chunks": _chunks(
        ((_PARAGRAPH + "Compare `if a < b and b <= c:` with `x<y`. ") * 9)[:2048], 100),
    "two calls after a sentence, in 40 chunks": _chunks(
        "Let me check both cities.\n\n" + _call("get_weather", {"city": "Paris", "unit": "celsius"}) + "\n"
        + _call("get_weather", {"city": "東京", "unit": "celsius"}) + "\n", 40),
}


def _off(chunks: list[str]) -> None:
    "".join(chunks)


def _events(chunks: list[str]) -> None:
    [TextDelta(chunk) for chunk in chunks]


def _on(chunks: list[str]) -> None:
    parser = ToolCallParser(TOOLS)
    for chunk in chunks:
        parser.feed(chunk)
    parser.end()


def _medians_us(fns, chunks: list[str], repeats: int) -> list[float]:
    """Median microseconds per answer of each fn over `repeats` rounds of ROUND answers, the fns interleaved
    round by round so that a busy machine slows them alike."""
    rounds: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, times in zip(fns, rounds):
            start = time.perf_counter()
            for _ in range(ROUND):
                fn(chunks)
            times.append((time.perf_counter() - start) / ROUND * 1e6)
    return [statistics.median(times) for times in rounds]


def main(argv: list[str]) -> int:
    repeats = int(argv[0]) if argv else 200
    for name, chunks in ANSWERS.items():
        off, events, on = _medians_us((_off, _events, _on), chunks, repeats)
        print(f"{name}: per answer join {off:.1f} us, events {events:.1f} us, parser {on:.1f} us "
              f"({on / off:.0f}x join, {on / events:.1f}x events; parser {(on - off) / len(chunks):.2f} us per chunk)",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
