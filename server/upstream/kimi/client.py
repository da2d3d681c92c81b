"""Kimi's REST chat protocol, asynchronously: create a chat, stream a completion, delete the chat."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

from common.kimi_headers import kimi_headers
from common.kimi_sse import SseParser
from server.upstream.errors import (UpstreamAuthRejected, UpstreamChatGone, UpstreamError, UpstreamRefused,
                                    UpstreamThrottled, UpstreamTimeout)
from server.upstream.http import HttpClient, HttpResponse, Reply, UnsendableRequest
from server.upstream.resolver import CachingResolver

log = logging.getLogger("server.kimi")

CHAT_ID = re.compile(r"^[0-9a-z]{20}$")

# Yielded by streams after the events of one upstream read: the time to send what was translated.
# Under load one read holds several events, and one write for all of them saves a syscall each.
FLUSH: dict = {}


@dataclass(frozen=True)
class Timeouts:
    """Upstream timeouts, in seconds."""

    connect: float
    request: float
    idle: float


class KimiClient:
    """Talks to one Kimi base URL with one account's access token per call."""

    def __init__(self, base_url: str, timeouts: Timeouts, pool_idle: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts
        self.http = HttpClient(CachingResolver(), timeouts.connect, pool_idle)

    def headers(self, access_token: str, referer: str = "/") -> dict:
        return {**kimi_headers(self.base_url, access_token, referer), "Content-Type": "application/json"}

    async def fetch(self, url: str, method: str, headers: dict, body: bytes | None, what: str) -> Reply:
        """One whole upstream call within the request timeout: a reply, or UpstreamTimeout/UpstreamError."""
        try:
            return await self.http.fetch(url, method, headers, body or b"", self.timeouts.request)
        except TimeoutError:
            raise UpstreamTimeout(f"{what} timed out") from None
        except (OSError, UnsendableRequest) as exc:
            raise UpstreamError(f"{what}: cannot reach Kimi ({type(exc).__name__})") from None

    async def open_stream(self, url: str, headers: dict, body: bytes, head_timeout: float,
                          what: str) -> HttpResponse:
        """POST and return once the response head is in (the body streams after): or UpstreamTimeout/UpstreamError."""
        try:
            return await self.http.open(url, "POST", headers, body, head_timeout)
        except TimeoutError:
            raise UpstreamTimeout(f"no answer to {what}") from None
        except (OSError, UnsendableRequest) as exc:
            raise UpstreamError(f"{what}: cannot reach Kimi ({type(exc).__name__})") from None

    async def call_json(self, method: str, path: str, access_token: str, body: dict | None) -> dict:
        response = await self.fetch(self.base_url + path, method, self.headers(access_token),
                                    orjson.dumps(body) if body is not None else None, f"{method} {path}")
        data = json_or_none(response.body)
        if response.code != 200:
            raise classify(response.code, data, path, response.headers.get("retry-after"))
        if not isinstance(data, dict):
            raise UpstreamError(f"{method} {path} answered 200 without a JSON object")
        return data

    async def create_chat(self, access_token: str, kimiplus_id: str = "kimi") -> str:
        data = await self.call_json("POST", "/api/chat", access_token, {
            "name": "未命名会话", "is_example": False, "enter_method": "new_chat", "kimiplus_id": kimiplus_id})
        chat_id = data.get("id")
        if not isinstance(chat_id, str) or not CHAT_ID.match(chat_id):
            raise UpstreamError("creating a chat returned no valid chat id")
        return chat_id

    async def delete_chat(self, access_token: str, chat_id: str) -> None:
        await self.call_json("DELETE", f"/api/chat/{chat_id}", access_token, None)

    async def user(self, access_token: str) -> dict:
        return await self.call_json("GET", "/api/user", access_token, None)

    async def research_usage(self, access_token: str) -> dict:
        return await self.call_json("GET", "/api/chat/research/usage", access_token, None)

    async def open_completion(self, access_token: str, chat_id: str, body: dict) -> KimiStream:
        """POST the completion; return once Kimi has answered 200 with an event stream."""
        url = f"{self.base_url}/api/chat/{chat_id}/completion/stream"
        response = await self.open_stream(url, self.headers(access_token, referer=f"/chat/{chat_id}"),
                                          orjson.dumps(body), self.timeouts.idle, "the completion request")
        content_type = response.headers.get("content-type", "")
        if response.status != 200 or "text/event-stream" not in content_type:
            # Check before parsing: a JSON error fed to an SSE parser is the "empty answer" bug.
            raw = await self.refusal_body(response)
            if response.status == 200:
                raise UpstreamError(f"the completion answered 200 with {content_type or 'no content type'}, "
                                    "not an event stream")
            raise classify(response.status, json_or_none(raw), "completion", response.headers.get("retry-after"))
        return KimiStream(response, self.timeouts.idle)

    async def refusal_body(self, response: HttpResponse) -> bytes:
        """The body of a stream Kimi refused (its error, if any), then close it; b"" if it stalls or breaks."""
        try:
            return await response.read_all(self.timeouts.idle)
        except (TimeoutError, ConnectionError):
            return b""
        finally:
            response.close()


class KimiStream:
    """Kimi's SSE events, one at a time, with the idle timeout applied between chunks."""

    def __init__(self, response: HttpResponse, idle: float) -> None:
        self._response = response
        self._idle = idle
        self._parser = SseParser()

    async def events(self, poll: float) -> AsyncIterator[dict | None]:
        """Yield events, then FLUSH once the bytes at hand are used up; None after `poll` s of silence
        (for keepalives); raise on idle timeout or a cut."""
        async for chunk in paced_chunks(self._response, poll, self._idle):
            if chunk is None:
                yield None
                continue
            for event in self._parser.feed(chunk):
                yield event
            yield FLUSH
        if self._parser.pending:
            raise UpstreamError("Kimi's stream ended inside an event")

    def close(self) -> None:
        self._response.close()

    def close_when_done(self) -> None:
        """The answer is complete: let the body end on its own, so the connection can be reused."""
        self._response.close_when_done()


async def paced_chunks(response: HttpResponse, poll: float, idle: float) -> AsyncIterator[bytes | None]:
    """Body chunks as they come; None after every `poll` s of silence (time for a keepalive).

    Raises UpstreamTimeout after `idle` s without a byte, and UpstreamError if the connection breaks.
    """
    silent = 0.0
    while True:
        wait = min(poll, idle - silent)
        try:
            chunk = await response.next_chunk(wait)
        except TimeoutError:
            silent += wait
            if silent >= idle:
                raise UpstreamTimeout(f"Kimi went silent for {idle:g}s mid-answer") from None
            yield None
            continue
        except ConnectionError:
            raise UpstreamError("Kimi's stream broke off before the answer was complete") from None
        if chunk is None:
            return
        silent = 0.0
        yield chunk


def classify(status: int, data: object, what: str, retry_after: str | None = None) -> UpstreamError:
    """Turn a non-200 Kimi answer into the matching UpstreamError."""
    error_type = data.get("error_type") if isinstance(data, dict) else None
    label = f"{what}: HTTP {status}" + (f" {error_type}" if error_type else "")
    if status == 401 or error_type == "auth.token.invalid":
        return UpstreamAuthRejected(label)
    if status == 429:
        try:
            seconds = max(1, int(retry_after or 30))
        except ValueError:
            seconds = 30
        return UpstreamThrottled(label, seconds)
    if error_type == "chat.not_found":
        return UpstreamChatGone(label)
    if status >= 500 or error_type == "chat.user_stream_pushing":
        return UpstreamError(label)
    if status in (408, 504):
        return UpstreamTimeout(label)
    return UpstreamRefused(label)


def json_or_none(raw: bytes | None) -> object:
    """The parsed JSON of an upstream body, or None when it is empty or not JSON."""
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
