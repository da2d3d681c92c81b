"""Scripted answers (issue 15 §4): tests say what Kimi answers, by a FIFO queue or by rules on the prompt."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

CHARS = "chars"   # `chunks` value: one event per character


def piece_count(chunks: int | str, text: str) -> int:
    """How many pieces `chunks` asks for `text` (answers.split_text makes them; imported there, not here,
    because answers needs state, which needs this module)."""
    return len(text) if chunks == CHARS else int(chunks)


class ScriptError(ValueError):
    """A malformed /_admin/script body; the message names the field."""


@dataclass(slots=True)
class Scripted:
    """One answer to stream: its exact text and how many pieces to cut it into (an int, or "chars")."""

    text: str
    chunks: int | str


@dataclass(slots=True)
class Rule:
    """Answer `answer` to any prompt containing `contains`, at most `times` times (None: forever)."""

    contains: str
    answer: str
    chunks: int | str
    times: int | None
    used: int = 0

    def live(self) -> bool:
        """True while the rule has uses left."""
        return self.times is None or self.used < self.times


def _chunks(value: object, field: str) -> int | str:
    """A valid `chunks` value (a positive int or "chars"), or a ScriptError naming `field`."""
    if value == CHARS:
        return CHARS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ScriptError(f'{field} must be a positive integer or "chars"')
    return value


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ScriptError(f"{field} must be a string")
    return value


class Script:
    """The queue, the rules and how often each source answered."""

    KEYS = frozenset({"answers", "rules", "chunks", "reset"})

    def __init__(self) -> None:
        self.queue: deque[Scripted] = deque()
        self.rules: list[Rule] = []
        self.used = {"queue": 0, "rules": 0}

    def configure(self, body: dict) -> None:
        """Apply a POST body: reset first (if asked), then append its answers and rules.

        Everything is checked before anything changes, so a bad body leaves the script as it was.
        """
        unknown = set(body) - self.KEYS
        if unknown:
            raise ScriptError(f"unknown script fields {sorted(unknown)}")
        chunks = _chunks(body.get("chunks", 1), "chunks")
        answers = body.get("answers", [])
        if not isinstance(answers, list):
            raise ScriptError("answers must be a list of strings")
        queued = [Scripted(_text(a, f"answers[{i}]"), chunks) for i, a in enumerate(answers)]
        rules = body.get("rules", [])
        if not isinstance(rules, list):
            raise ScriptError("rules must be a list of objects")
        parsed = [self._rule(r, f"rules[{i}]", chunks) for i, r in enumerate(rules)]
        if body.get("reset"):
            self.__init__()
        self.queue.extend(queued)
        self.rules.extend(parsed)

    @staticmethod
    def _rule(raw: object, field: str, chunks: int | str) -> Rule:
        if not isinstance(raw, dict):
            raise ScriptError(f"{field} must be an object")
        unknown = set(raw) - {"contains", "answer", "chunks", "times"}
        if unknown:
            raise ScriptError(f"unknown fields {sorted(unknown)} in {field}")
        times = raw.get("times")
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
            raise ScriptError(f"{field}.times must be a positive integer")
        return Rule(_text(raw.get("contains"), f"{field}.contains"), _text(raw.get("answer"), f"{field}.answer"),
                    _chunks(raw.get("chunks", chunks), f"{field}.chunks"), times)

    def take(self, prompt: str) -> Scripted | None:
        """The answer for `prompt`: the queue's next, else the first live matching rule, else None (the echo)."""
        if self.queue:
            self.used["queue"] += 1
            return self.queue.popleft()
        for rule in self.rules:
            if rule.live() and rule.contains in prompt:
                rule.used += 1
                self.used["rules"] += 1
                return Scripted(rule.answer, rule.chunks)
        return None

    def snapshot(self) -> dict:
        """What GET /_admin/script shows."""
        return {"answers": [{"text": s.text, "chunks": s.chunks} for s in self.queue],
                "rules": [{"contains": r.contains, "answer": r.answer, "chunks": r.chunks, "times": r.times,
                           "used": r.used} for r in self.rules],
                "used": dict(self.used)}
