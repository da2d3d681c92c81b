"""The emulator's handler base: JSON in and out, Kimi's error bodies, auth, injected HTTP faults."""

from __future__ import annotations

import asyncio

import orjson
import tornado.web

from tests.kimi_emulator.state import EmulatorState
from tests.kimi_emulator.tokens import AuthError


class ClientGone(Exception):
    """The client hung up in the middle of a stream."""


class Pacer:
    """Paces a stream's events; raises ClientGone at once when the client hangs up (set()).

    One timer and one future per pause, not a task: the emulator pauses before every event of
    every stream, and its CPU is CPU the product under test does not get in a benchmark.
    """

    CATCH_UP_LIMIT = 1.0   # later than this (a stall, not jitter), the schedule starts afresh

    def __init__(self, pauses: set | None = None) -> None:
        self.closed = False
        self._waiter: asyncio.Future | None = None
        self._due: float | None = None
        self._pauses = pauses if pauses is not None else set()   # every stream's pause now: /_admin/release ends them

    def set(self) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def check(self) -> None:
        """Raise ClientGone if the client has hung up."""
        if self.closed:
            raise ClientGone()

    async def pace(self, delay: float) -> None:
        """Wait until the next event is due, `delay` s after the previous one was due.

        A schedule, not a sleep after each send: like a model producing tokens at a steady rate, the
        stream keeps its pace when this process is slow to wake, instead of stretching by every delay.
        """
        now = asyncio.get_running_loop().time()
        if self._due is None or now - self._due > self.CATCH_UP_LIMIT:
            self._due = now
        self._due += delay
        await self.pause(max(0.0, self._due - now))

    async def pause(self, seconds: float) -> None:
        """Wait `seconds`; raise ClientGone if the client hangs up before or during the wait."""
        self.check()
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(seconds, _wake, waiter)
        self._pauses.add(waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
            self._pauses.discard(waiter)
        self.check()


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def auth_invalid() -> "KimiError":
    """Kimi's answer to an expired, unknown or revoked token."""
    return KimiError(401, "auth.token.invalid", "您的授权已过期，请重新登录", "该用户的授权已过期，请重新登录")


class KimiError(Exception):
    """Answer with Kimi's `{"error_type", "message", "detail"}` body."""

    def __init__(self, status: int, error_type: str, message: str, detail: object = "") -> None:
        super().__init__(message)
        self.status, self.body = status, {"error_type": error_type, "message": message, "detail": detail}


class EmulatorHandler(tornado.web.RequestHandler):
    """Common plumbing; `endpoint` names the route for faults, counts and read-back."""

    endpoint = ""

    def initialize(self, state: EmulatorState) -> None:
        self.state = state
        stream = getattr(self.request.connection, "stream", None)
        if stream is not None and not getattr(stream, "kimi_counted", False) and not self.request.path.startswith("/_admin"):
            # One per TCP connection that carried a Kimi call: tells kept-alive reuse from a connection per call.
            stream.kimi_counted = True
            state.connections += 1

    def body_json(self) -> dict:
        if not self.request.body:
            return {}
        try:
            body = orjson.loads(self.request.body)
        except orjson.JSONDecodeError:
            raise KimiError(400, "validation.error", "参数验证错误", ["invalid JSON"]) from None
        if not isinstance(body, dict):
            raise KimiError(400, "validation.error", "参数验证错误", ["body must be an object"])
        return body

    def send_json(self, data: object, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(orjson.dumps(data))

    def bearer(self) -> str:
        value = self.request.headers.get("Authorization", "")
        return value[7:].strip() if value[:7].lower() == "bearer " else ""

    def authenticated_user(self) -> str:
        try:
            return self.state.tokens.user_for_access(self.bearer())
        except AuthError:
            raise auth_invalid() from None

    async def before(self, body: object = None) -> bool:
        """Record the call and apply an injected fault; False when the fault already answered.

        A fault is {"status", "body"} (answer with it), {"close": true} (drop the connection), or
        {"stall": seconds} (then drop the connection, or carry on normally with "proceed": true).
        """
        self.state.record(self.endpoint, self.request.method, self.request.path, body)
        if self.state.faults.latency:
            await asyncio.sleep(self.state.faults.latency)
        fault = self.state.faults.take(self.endpoint)
        if fault is None:
            return True
        if fault.get("stall"):
            await self._stall(float(fault["stall"]))
            if not fault.get("proceed"):
                # A hung upstream that finally drops the connection, having done nothing.
                self.request.connection.stream.close()
                return False
        if fault.get("close"):
            self.request.connection.stream.close()
            return False
        if fault.get("status"):
            body = fault.get("body", {"error_type": "server.error", "message": "服务内部错误", "detail": ""})
            self.send_json(body, int(fault["status"]))
            return False
        return True

    async def _stall(self, seconds: float) -> None:
        """Sleep, counting how many calls of this endpoint are stalled at once (clients' concurrency)."""
        stalled = self.state.stalled
        stalled[self.endpoint] = stalled.get(self.endpoint, 0) + 1
        self.state.max_stalled[self.endpoint] = max(self.state.max_stalled.get(self.endpoint, 0),
                                                    stalled[self.endpoint])
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(seconds, _wake, waiter)
        self.state.pauses.add(waiter)   # /_admin/release ends it early
        try:
            await waiter
        finally:
            timer.cancel()
            self.state.pauses.discard(waiter)
            stalled[self.endpoint] -= 1

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, KimiError):
            self.set_status(exc.status)
            self.finish(orjson.dumps(exc.body))
            return
        self.finish(orjson.dumps({"error_type": "server.error", "message": "服务内部错误", "detail": ""}))

    def log_exception(self, typ, value, tb) -> None:
        if not isinstance(value, KimiError):
            super().log_exception(typ, value, tb)

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, KimiError):
            self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


class StreamingHandler(EmulatorHandler):
    """A handler that streams paced events and notices at once when the client hangs up."""

    def prepare(self) -> None:
        self.pacer = Pacer(self.state.pauses)

    def on_connection_close(self) -> None:
        self.pacer.set()
