"""Everything the emulator remembers: clock, tokens, chats, faults, and what it received."""

from __future__ import annotations

import random
import re
import time
from collections import deque
from dataclasses import dataclass, field

from tests.kimi_emulator.models import ModelTable
from tests.kimi_emulator.scripts import Script
from tests.kimi_emulator.tokens import TokenAuthority, xid

K1_AGENT_ID = "crm40ee9e5jvhsn7ptcg"
AGENT_ID_PATTERN = re.compile(r"^[0-9a-z]{20}$")


class Clock:
    """Wall time plus an offset that tests can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


@dataclass
class Chat:
    """One conversation with its server-side history."""

    id: str
    user_id: str
    name: str
    kimiplus_id: str
    created_at: float
    history: list = field(default_factory=list)   # [{"role", "content"}]
    streaming: bool = False
    segments: dict = field(default_factory=dict)  # segment id -> text still owed after a `length` cap
    segment_chunks: dict = field(default_factory=dict)  # segment id -> a scripted answer's chunks, for its rest
    protocol: str = "rest"                         # chats made over Connect cannot be deleted over REST
    messages: list = field(default_factory=list)  # Connect message tree: {"id", "parentId", "role", "text"}


# Stream-shape switches (kimi-protocol.md §4 item 13) and their defaults.
STREAM_DEFAULTS = {
    "chunks": 4,             # cmpl events per answer
    "event_delay": 0.0,      # seconds between events
    "split_writes": False,   # write bytes in pieces cut inside UTF-8 sequences and `data:` lines
    "cut_after": None,       # close the connection after N cmpl events, with no all_done
    "error_after": None,     # send an `error` event after N cmpl events
    "stall_after": None,     # go silent after N cmpl events ...
    "stall_seconds": 3600.0,  # ... for this long
    "length_cap": None,      # emit `length` once this many answer chars went out in one segment
    "rename": True,          # send a `rename` event on a chat's first answer
    "answer": None,          # answer template; None means the default echo
    "k1_chunks": 3,          # k1 (thinking) events for thinking requests
    "search_results": 2,     # search_plus get_res events for use_search
}


class Faults:
    """One-shot HTTP faults per endpoint, plus the stream switches."""

    def __init__(self) -> None:
        self.http: dict[str, deque] = {}
        self.stream = dict(STREAM_DEFAULTS)
        self.camouflage_errors = False
        # Connect faults (kimi-protocol.md §4 item 21).
        self.connect = {"end_error": None,        # {"code", "paywall"?}: an error in the end-stream frame, after done
                        "overloaded": False,      # block.exception REASON_COMPLETION_OVERLOADED instead of text
                        "duplicate_frames": False,  # every frame sent twice (same eventOffset)
                        "auth_in_stream": False,  # a bad token: 200 + end-stream unauthenticated, not HTTP 401
                        "coalesce": False,        # several frames per TCP write
                        # The 2026 web (kimi-protocol-2026-12.md §1.6, §3.4); also one-shot via /_admin/faults.
                        "sandbox_tools": None,    # ipython + web_search runs: None = for K3/K2.5 scenarios
                        "sandbox_search_results": 2,  # results of the sandbox's own web_search
                        "citations": None,        # "emoji", "emoji_text" or "pua": a marker citing a result
                        "degrade": False,         # a TYPE_MODEL_DEGRADE notification frame
                        "system_message": False,  # a system-role message (and its block) in the stream
                        "empty_end": False,       # the end-stream frame with an empty payload
                        "overloaded_free": False}  # REASON_SERVER_OVERLOADED_FOR_FREE_USER before the answer
        self.parse_fail = False
        self.parse_stall = False    # Connect uploads stay PROCESS_STATUS_PROCESSING for ever
        self.parse_polls = 1        # GetFileParseProgress answers PROCESSING this many times per file first
        self.latency = 0.0          # seconds added before every answer (a far-away Kimi)
        self.chaos_rate = 0.0       # share of turns that get a random fault
        self.chaos = random.Random(0)
        self.stream_pushing_status = 400
        self.stream_pushing_scope = "chat"   # or "user"

    def add(self, endpoint: str, spec: dict) -> None:
        """Queue `spec` ({status, body, stall, close}) for the next `times` calls of `endpoint`."""
        queue = self.http.setdefault(endpoint, deque())
        for _ in range(int(spec.get("times", 1))):
            queue.append(spec)

    def take(self, endpoint: str) -> dict | None:
        """The next queued fault for `endpoint`, if any (or a random one in chaos mode)."""
        queue = self.http.get(endpoint)
        if queue:
            return queue.popleft()
        if self.chaos_rate and endpoint in ("chat_create", "completion", "connect_chat") \
                and self.chaos.random() < self.chaos_rate / 4:
            return {"status": self.chaos.choice((500, 502, 503))}
        return None

    def stream_switches(self) -> dict:
        """The stream switches for one answer: the configured ones, or a random fault in chaos mode."""
        if not self.chaos_rate or self.chaos.random() >= self.chaos_rate:
            return self.stream
        fault = self.chaos.choice(("cut_after", "error_after", "stall_after", "split_writes", "event_delay"))
        value = {"split_writes": True, "event_delay": 0.01}.get(fault, self.chaos.randrange(0, 3))
        return {**self.stream, fault: value, "stall_seconds": 30.0}


class EmulatorState:
    """The whole emulated service."""

    def __init__(self, web: str = "2026") -> None:
        self.web = web   # "2026": Connect and the refresh RPC only; "legacy": REST, the GET refresh and Connect
        self.clock = Clock()
        self.tokens = TokenAuthority(self.clock)
        self.faults = Faults()
        self.chats: dict[str, Chat] = {}
        self.users: dict[str, dict] = {}
        self.agents = {"kimi", K1_AGENT_ID, "coo6l3pkqq4ri39f36bg"}
        self.research = {"total": 20, "used": 0}
        self.models = ModelTable()   # GetAvailableModels and the scenarios a Chat takes
        self.script = Script()       # scripted answers: replace the echo while queued or matched
        self.received: deque = deque(maxlen=5000)
        self.uploads: dict[str, dict] = {}   # object name -> {"file_id", "data", "content_type"}
        self.files: dict[str, dict] = {}     # file id -> record
        self.counts: dict[str, int] = {}
        self.chats_created = 0
        self.chats_deleted = 0
        self.open_streams = 0
        self.streams_closed_by_client = 0
        self.connections = 0   # TCP connections that carried Kimi calls (admin calls not counted)
        self.stalled: dict[str, int] = {}       # endpoint -> calls inside an injected stall now
        self.max_stalled: dict[str, int] = {}   # endpoint -> the most at once
        # Pauses right now (a stream's `stall_after` stall or pacing, a call's injected stall):
        # tests wait for them on a condition, then end them with /_admin/release.
        self.pauses: set = set()

    def release_pauses(self) -> int:
        """End every stream's pause now (a held stall goes on at once); return how many there were."""
        waiters = [w for w in self.pauses if not w.done()]
        for waiter in waiters:
            waiter.set_result(None)
        return len(waiters)

    def reset(self) -> None:
        """Forget everything (a new emulator of the same web)."""
        self.__init__(self.web)

    def record(self, endpoint: str, method: str, path: str, body: object) -> None:
        """Remember a request for the admin read-back."""
        self.counts[endpoint] = self.counts.get(endpoint, 0) + 1
        self.received.append({"endpoint": endpoint, "method": method, "path": path, "body": body,
                              "at": self.clock.now()})

    def new_account(self, name: str = "") -> dict:
        """Mint a user and a token pair."""
        user_id, access, refresh = self.tokens.new_account()
        self.users[user_id] = {"id": user_id, "name": name or f"user-{user_id[:6]}", "status": "normal"}
        return {"user_id": user_id, "access_token": access, "refresh_token": refresh}

    def create_chat(self, user_id: str, name: str, kimiplus_id: str, protocol: str = "rest") -> Chat:
        chat = Chat(xid(), user_id, name, kimiplus_id, self.clock.now(), protocol=protocol)
        self.chats[chat.id] = chat
        self.chats_created += 1
        return chat

    def stats(self) -> dict:
        """Counters for tests."""
        return {**self.tokens.counters(), "web": self.web, "live_chats": len(self.chats),
                "chats_created": self.chats_created,
                "chats_deleted": self.chats_deleted, "open_streams": self.open_streams,
                "streams_closed_by_client": self.streams_closed_by_client, "requests": dict(self.counts),
                "connections": self.connections, "max_stalled": dict(self.max_stalled),
                "stalled": dict(self.stalled),
                "paused": len(self.pauses),
                "research": self.research_usage(), "clock_offset": self.clock.offset}

    def research_usage(self) -> dict:
        total, used = self.research["total"], self.research["used"]
        return {"remain": max(total - used, 0), "total": total, "used": used}

    def agent_known(self, kimiplus_id: str) -> bool:
        return kimiplus_id in self.agents

    @staticmethod
    def agent_shaped(kimiplus_id: str) -> bool:
        return kimiplus_id == "kimi" or bool(AGENT_ID_PATTERN.match(kimiplus_id))
