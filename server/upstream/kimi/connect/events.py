"""One Chat stream's events as answer events: text, reasoning, sources; sandbox tools, notices and system
messages kept out of the answer (kimi-protocol.md §3.5-3.7, kimi-protocol-2026-12.md §1.6, §3.4)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from common.config import Account
from common.timestamps import iso_utc
from server.core.events import Event, ReasoningDelta, Source, TextDelta
from server.upstream.kimi.connect.citations import CitationFilter
from server.upstream.kimi.connect.errors import block_exception

log = logging.getLogger("server.connect")

DEGRADE = "TYPE_MODEL_DEGRADE"
ARGS_LOGGED = 300   # characters of a sandbox tool's arguments shown in the debug log


class ModelDegrades:
    """How often Kimi said it answered with a lesser model (TYPE_MODEL_DEGRADE), for /v1/status."""

    def __init__(self) -> None:
        self.count = 0
        self.last_at: float | None = None
        self.last_account: str | None = None

    def record(self, account: Account, message: str) -> None:
        """Count one degraded answer and log it with the account's name."""
        self.count += 1
        self.last_at, self.last_account = time.time(), account.name
        log.info("account %r: Kimi degraded this answer to a lesser model (%s): %s", account.name, DEGRADE,
                 message[:200] or "no message")

    def status(self) -> dict:
        """The /v1/status field: count, last time (ISO 8601, UTC) and account."""
        last = iso_utc(self.last_at) if self.last_at is not None else None
        return {"count": self.count, "last_seen_at": last, "last_account": self.last_account}


@dataclass
class ToolRun:
    """One server-side sandbox tool call (`block.tool`), assembled from its set/append frames."""

    name: str = ""
    call_id: str = ""
    status: str = ""
    args: str = ""
    results: int = 0
    logged: bool = False


class ChatEvents:
    """Translates one turn's Connect events; `show_sources` renders search results (and `[n]` citations)."""

    def __init__(self, account: Account, show_sources: bool, degrades: ModelDegrades) -> None:
        self.account, self.show_sources, self.degrades = account, show_sources, degrades
        self.produced = False
        self.sources = 0   # search results shown so far: citation [n] numbers count them
        self._refs: dict[str, int] = {}
        self._citations = CitationFilter(self._refs.get)
        self._tools: dict[str, ToolRun] = {}
        self._system_ids: set[str] = set()
        self._degraded = False

    def feed(self, event: dict) -> list[Event]:
        """The events one frame contributes (most contribute none)."""
        self._notice(event.get("notification"))
        message = event.get("message")
        if isinstance(message, dict) and message.get("role") == "system":
            self._system(message)
        block = event.get("block")
        if not isinstance(block, dict):
            return []
        if str(block.get("messageId") or block.get("message_id") or "") in self._system_ids:
            return []   # a system message's own block: never answer text
        masks = set(str(event.get("mask") or "").split(","))
        text = _content(block, "text")
        if masks & {"block.text", "block.text.content"} and text:
            return self._text(text)
        think = _content(block, "think")
        if masks & {"block.think", "block.think.content"} and think:
            self.produced = True
            return [ReasoningDelta(think)]
        if isinstance(block.get("exception"), dict):
            raise block_exception(block["exception"])
        if isinstance(block.get("tool"), dict):
            return self._tool(str(block.get("id") or ""), block["tool"], event.get("op"), masks)
        return []

    def end(self) -> list[Event]:
        """The stream ended well: a marker left open was plain text."""
        rest = self._citations.flush()
        return [TextDelta(rest)] if rest else []

    def _text(self, text: str) -> list[Event]:
        """Answer text, citation markers rewritten."""
        text = self._citations.feed(text)
        if not text:
            return []
        self.produced = True
        return [TextDelta(text)]

    def _notice(self, notification: object) -> None:
        """A `notification` frame: TYPE_MODEL_DEGRADE is counted once per turn; none is answer text."""
        if isinstance(notification, dict) and notification.get("type") == DEGRADE and not self._degraded:
            self._degraded = True   # once per turn, however often Kimi repeats it
            self.degrades.record(self.account, str(notification.get("message") or ""))

    def _system(self, message: dict) -> None:
        """Remember a system message's id, so that its blocks are never taken for the answer."""
        if isinstance(message.get("id"), str) and message["id"] not in self._system_ids:
            self._system_ids.add(message["id"])
            blocks = message.get("blocks") if isinstance(message.get("blocks"), list) else []
            size = sum(len(_content(b, "text")) for b in blocks if isinstance(b, dict))
            log.debug("account %r: Kimi sent a system message (%d characters), not shown", self.account.name, size)

    def _tool(self, block_id: str, tool: dict, op: object, masks: set[str]) -> list[Event]:
        """Sandbox tool frames never reach the answer: search results may become sources, the rest is logged."""
        run = self._tools.setdefault(block_id, ToolRun())
        run.name = str(tool.get("name") or run.name)
        run.call_id = str(tool.get("toolCallId") or tool.get("tool_call_id") or run.call_id)
        run.status = str(tool.get("status") or run.status)
        args = tool.get("args")
        if isinstance(args, str):
            run.args = run.args + args if op == "append" and "block.tool.args" in masks else args
        found = []
        contents = tool.get("contents")
        if isinstance(contents, list):
            # A set repeats the whole list (only its new tail is new); an append brings new items only.
            found = self._results(run, contents if op == "append" else contents[run.results:])
        if run.status == "STATUS_DONE" and not run.logged:
            run.logged = True
            log.debug("account %r: Kimi ran its %s tool %s (args %r): %d result(s)", self.account.name,
                      run.name or run.call_id.split(":")[0] or "unnamed", run.call_id or "?",
                      run.args[:ARGS_LOGGED], run.results)
        return found

    def _results(self, run: ToolRun, contents: list) -> list[Event]:
        """A tool's search results as source lines (when shown), each numbered for its citations."""
        found = []
        for content in contents:
            index, run.results = run.results, run.results + 1
            result = content.get("searchResult") if isinstance(content, dict) else None
            base = result.get("base") if isinstance(result, dict) else None
            if not isinstance(base, dict) or not self.show_sources:
                continue
            self.sources += 1
            found.append(Source(str(base.get("title") or ""), str(base.get("url") or ""), str(base.get("siteName") or "")))
            ref = result.get("refIndex") or content.get("refIndex") or (f"{run.call_id}#{index}" if run.call_id else "")
            if isinstance(ref, str) and ref:
                self._refs.setdefault(ref, self.sources)
        return found


def _content(block: dict, kind: str) -> str:
    """`block[kind].content` when it is a string, else ''."""
    part = block.get(kind)
    content = part.get("content") if isinstance(part, dict) else None
    return content if isinstance(content, str) else ""
