"""Kimi's Connect RPC side (kimi-protocol.md §3, §4 items 20-23): the framed Chat stream and unary RPCs."""

from __future__ import annotations

import asyncio
import datetime

import orjson
import tornado.iostream

from tests.kimi_emulator import answers, connect_files, connect_tools
from tests.kimi_emulator.base import ClientGone, EmulatorHandler, StreamingHandler
from tests.kimi_emulator.models import model_fields_problem
from tests.kimi_emulator.scripts import Scripted, piece_count
from tests.kimi_emulator.state import Chat
from tests.kimi_emulator.tokens import AuthError, xid

CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
END_STREAM = 0x02


def frame(payload: dict, flags: int = 0) -> bytes:
    """One Connect envelope: flags, 4-byte big-endian length, JSON."""
    data = orjson.dumps(payload)
    return bytes([flags]) + len(data).to_bytes(4, "big") + data


def _pick(data: dict, *names: str) -> object:
    """Protobuf JSON takes snake_case and lowerCamelCase alike."""
    for name in names:
        if name in data:
            return data[name]
    return None


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


class ConnectError(Exception):
    def __init__(self, code: str, message: str, status: int = 400, paywall: bool = False, reason: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.status, self.paywall, self.reason = code, message, status, paywall, reason

    def body(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.paywall:
            error["details"] = [{"debug": {"reason": "SUBSCRIPTION_REQUIRED", "paywall": {"type": "upgrade"}}}]
        elif self.reason:
            error["details"] = [{"debug": {"reason": self.reason,
                                           "localizedMessage": {"locale": "en-US", "message": self.message}}}]
        return error


class ConnectChatHandler(StreamingHandler):
    """The server-streaming Chat RPC."""

    endpoint = "connect_chat"

    def prepare(self) -> None:
        super().prepare()
        self._offset = 0
        self._switches = self.state.faults.stream_switches()

    async def post(self) -> None:
        request = _unframe(self.request.body)
        self.state.record(self.endpoint, "POST", self.request.path, request if isinstance(request, dict) else None)
        if self.state.faults.latency:
            await asyncio.sleep(self.state.faults.latency)
        fault = self.state.faults.take(self.endpoint)
        # A one-shot fault may carry Connect switches for this call only (the rest stay as /_admin/connect set them).
        self._connect = {**self.state.faults.connect, **{k: v for k, v in (fault or {}).items()
                                                          if k in self.state.faults.connect}}
        if fault and fault.get("status"):
            self.send_json(fault.get("body", {"code": "unavailable", "message": "injected"}), int(fault["status"]))
            return
        if fault and fault.get("close"):
            self.request.connection.stream.close()
            return
        try:
            user_id = self.state.tokens.user_for_access(self.bearer())
        except AuthError:
            if not self._connect["auth_in_stream"]:
                self.send_json({"code": "unauthenticated", "message": "token is expired"}, 401)
                return
            user_id = None
        self.set_header("Content-Type", "application/connect+json")
        self.request.connection.stream.set_nodelay(True)
        self.state.open_streams += 1
        try:
            if user_id is None:
                raise ConnectError("unauthenticated", "token is expired")
            if not isinstance(request, dict):
                raise ConnectError("invalid_argument", request)
            if problem := model_fields_problem(request, self.state.models.scenarios(), self.state.agent_known):
                raise ConnectError("invalid_argument", problem)
            await self._chat(user_id, request)
            await self._end(self._connect["end_error"])
        except ConnectError as exc:
            await self._end(exc.body(), raw=True)
        except (ClientGone, tornado.iostream.StreamClosedError):
            self.state.streams_closed_by_client += 1
        finally:
            self.state.open_streams -= 1

    async def _chat(self, user_id: str, request: dict) -> None:
        switches, connect = self._switches, self._connect
        message = request.get("message") if isinstance(request.get("message"), dict) else {}
        blocks = message.get("blocks") if isinstance(message.get("blocks"), list) else []
        prompt = "".join(str((b.get("text") or {}).get("content", "")) for b in blocks
                         if isinstance(b, dict) and isinstance(b.get("text"), dict))
        if not prompt.strip():
            raise ConnectError("invalid_argument", "message.blocks has no text")
        files_note = connect_files.files_note(self.state, user_id, blocks)
        chat_id = _pick(request, "chat_id", "chatId") or ""
        parent_id = _pick(message, "parent_id", "parentId") or ""
        if chat_id:
            chat = self.state.chats.get(chat_id)
            if chat is None or chat.user_id != user_id:
                raise ConnectError("not_found", "chat not found")
            if parent_id and parent_id not in {m["id"] for m in chat.messages}:
                raise ConnectError("invalid_argument", "parent_id is not a message of this chat")
        else:
            chat = self.state.create_chat(user_id, "未命名会话", "kimi", protocol="connect")
        options = request.get("options") if isinstance(request.get("options"), dict) else {}
        tools = request.get("tools") if isinstance(request.get("tools"), list) else []
        search = any(isinstance(t, dict) and t.get("type") == "TOOL_TYPE_SEARCH" for t in tools)
        previous = next((m["text"] for m in reversed(chat.messages) if m["role"] == "user"), "")
        turn = sum(1 for m in chat.messages if m["role"] == "user") + 1
        user_msg = {"id": xid(), "parentId": parent_id or chat.id, "role": "user", "text": prompt}
        reply = {"id": xid(), "parentId": user_msg["id"], "role": "assistant", "text": ""}
        chat.messages += [user_msg, reply]
        await self._send({"op": "set", "chat": {"id": chat.id, "name": chat.name}})
        await self._send({"heartbeat": {}}, same_offset=True)
        await self._send({"op": "set", "mask": "message", "message": {
            "id": user_msg["id"], "role": "user", "status": "MESSAGE_STATUS_COMPLETED",
            "blocks": [{"id": "text_0_0", "text": {"content": prompt}}]}})
        if connect["overloaded_free"]:
            # Peak hours: the free account is refused before the model starts (in the end-stream frame).
            raise ConnectError("resource_exhausted", connect_tools.OVERLOAD_MESSAGE,
                               reason=connect_tools.OVERLOAD_REASON)
        if connect["system_message"]:
            await self._send_all(connect_tools.system_message(user_msg["id"]))
        await self._send({"op": "set", "mask": "message", "message": {
            "id": reply["id"], "parentId": user_msg["id"], "role": "assistant", "status": "MESSAGE_STATUS_GENERATING",
            "scenario": request.get("scenario") or "SCENARIO_K2D5"}})
        if connect["degrade"]:
            await self._send(connect_tools.degrade_notice())
        if switches["rename"] and turn == 1:
            await self._send({"op": "set", "mask": "chat.name", "chat": {"name": prompt[:20]}})
        if options.get("thinking"):
            pieces = answers.split_text(f"Thinking about 「{prompt[:40]}」 step by step.", switches["k1_chunks"])
            await self._send({"op": "set", "mask": "block.think", "block": {"id": "0_0", "think": {"content": ""}}})
            for piece in pieces:
                await self._send({"op": "append", "mask": "block.think.content",
                                  "block": {"id": "0_0", "think": {"content": piece}}})
        results = switches["search_results"] if search else 0
        if search:
            await self._send_all(connect_tools.search_run("0_3", prompt, results))
        if connect_tools.sandbox_wanted(connect["sandbox_tools"], str(request.get("scenario") or "")):
            # K3/K2.5 run their own tools on every request; the search runs only if the request declared none.
            await self._send_all(connect_tools.ipython_run("0_4"))
            if not search:
                results = connect["sandbox_search_results"]
                await self._send_all(connect_tools.search_run("0_5", prompt, results))
        if connect["overloaded"]:
            await self._send({"op": "set", "mask": "block.exception", "block": {"id": "0_2", "exception": {"error": {
                "reason": "REASON_COMPLETION_OVERLOADED", "severity": "ERROR",
                "localizedMessage": {"locale": "zh-CN", "message": "当前模型负载较高"}}}}})
            return
        # Taken only when an answer will stream: a refused turn must not spend a test's scripted answer.
        scripted = self.state.script.take(prompt)
        if scripted is None:
            template = switches["answer"]
            text = template.format(prompt=prompt, turn=turn) if template else \
                answers.default_answer(prompt, turn, previous)
            # Only the echo gets the files note and a citation marker: a scripted answer stays verbatim.
            scripted = Scripted(connect_tools.cite(text + files_note, connect["citations"], results),
                                switches["chunks"])
        await self._send({"op": "set", "mask": "block.text", "block": {"id": "0_1", "text": {"content": ""}}})
        pieces = answers.split_text(scripted.text, piece_count(scripted.chunks, scripted.text))
        for index, piece in enumerate(pieces):
            if index == switches["cut_after"]:
                self.request.connection.stream.close()
                raise ClientGone()
            if index == switches["error_after"]:
                raise ConnectError("internal", "Kimi 现在有点累了")
            if index == switches["stall_after"]:
                await self.pacer.pause(switches["stall_seconds"])
            await self._send({"op": "append", "mask": "block.text.content",
                              "block": {"id": "0_1", "text": {"content": piece}}})
            reply["text"] += piece
        if connect["degrade"]:
            await self._send(connect_tools.degrade_notice())   # Kimi may repeat it: still one degraded answer
        await self._send({"op": "set", "mask": "message.status",
                          "message": {"id": reply["id"], "status": "MESSAGE_STATUS_COMPLETED"}})
        await self._send({"done": {}})

    async def _send_all(self, events: list[dict]) -> None:
        """Send events in order, each a frame of its own."""
        for event in events:
            await self._send(event)

    async def _send(self, event: dict, same_offset: bool = False) -> None:
        self.pacer.check()
        if not same_offset:
            self._offset += 1
        data = frame({**event, "eventOffset": self._offset})
        if self._connect["duplicate_frames"] and "done" not in event:
            data += data
        await self._write(data)

    async def _write(self, data: bytes) -> None:
        switches = self._switches
        if switches["event_delay"]:
            await self.pacer.pace(switches["event_delay"])
        if switches["split_writes"]:
            # Cut inside the 5-byte header and again mid-payload.
            for piece in (data[:2], data[2:len(data) // 2], data[len(data) // 2:]):
                if piece:
                    self.write(piece)
                    await self.flush()
                    await asyncio.sleep(0)
            return
        self.write(data)
        if not self._connect["coalesce"]:
            await self.flush()

    async def _end(self, error: dict | None, raw: bool = False) -> None:
        """The end-of-stream frame: `{}`, or `{"error": ...}`."""
        if error and not raw:
            error = ConnectError(error.get("code", "internal"), error.get("message", "injected"),
                                 paywall=bool(error.get("paywall")), reason=str(error.get("reason") or "")).body()
        try:
            if not error and self._connect["empty_end"]:
                self.write(bytes([END_STREAM]) + bytes(4))   # an end frame with no payload at all (MPW)
            else:
                self.write(frame({"error": error} if error else {}, END_STREAM))
            await self.flush()
        except tornado.iostream.StreamClosedError:
            pass


def _unframe(body: bytes) -> dict | str:
    """The one request message, or why the body is not a valid envelope."""
    if len(body) < 5:
        return "the request is not a Connect envelope"
    flags, length = body[0], int.from_bytes(body[1:5], "big")
    if flags & 0x01:
        return "compressed messages are not supported"
    if flags != 0 or length != len(body) - 5:
        return "malformed envelope"
    try:
        data = orjson.loads(body[5:])
    except orjson.JSONDecodeError:
        return "the message is not JSON"
    return data if isinstance(data, dict) else "the message is not an object"


class ConnectUnaryHandler(EmulatorHandler):
    """Unary RPCs: JSON in, lowerCamelCase JSON out, errors as non-2xx {"code", "message"}."""

    endpoint = "connect_unary"

    async def post(self, service: str, method: str) -> None:
        try:
            body = orjson.loads(self.request.body or b"{}")
        except orjson.JSONDecodeError:
            body = None
        self.state.record(f"connect_{method}", "POST", self.request.path, body)
        try:
            if not isinstance(body, dict):
                raise ConnectError("invalid_argument", "the body is not a JSON object")
            try:
                user_id = self.state.tokens.user_for_access(self.bearer())
            except AuthError:
                raise ConnectError("unauthenticated", "token is expired", 401) from None
            handler = getattr(self, f"_{method}", None)
            if handler is None:
                raise ConnectError("unimplemented", f"{service}/{method}", 404)
            self.send_json(handler(user_id, body))
        except ConnectError as exc:
            self.send_json(exc.body(), exc.status)

    def _own_chat(self, user_id: str, body: dict) -> Chat:
        chat = self.state.chats.get(str(_pick(body, "chat_id", "chatId") or ""))
        if chat is None or chat.user_id != user_id:
            raise ConnectError("not_found", "chat not found", 404)
        return chat

    def _DeleteChat(self, user_id: str, body: dict) -> dict:  # noqa: N802 - RPC names
        chat = self._own_chat(user_id, body)
        del self.state.chats[chat.id]
        self.state.chats_deleted += 1
        return {}

    def _BatchDeleteChats(self, user_id: str, body: dict) -> dict:  # noqa: N802
        for chat_id in _pick(body, "chat_ids", "chatIds") or []:
            chat = self.state.chats.get(chat_id)
            if chat is not None and chat.user_id == user_id:
                del self.state.chats[chat_id]
                self.state.chats_deleted += 1
        return {}

    def _ListChats(self, user_id: str, body: dict) -> dict:  # noqa: N802
        size = int(_pick(body, "page_size", "pageSize") or 50)
        start = int(_pick(body, "page_token", "pageToken") or 0)
        mine = sorted((c for c in self.state.chats.values() if c.user_id == user_id), key=lambda c: -c.created_at)
        page = mine[start:start + size]
        chats = [{"id": c.id, "name": c.name, "createTime": _iso(c.created_at), "updateTime": _iso(c.created_at)}
                 for c in page]
        return {"chats": chats, "nextPageToken": str(start + size) if start + size < len(mine) else ""}

    def _GetChat(self, user_id: str, body: dict) -> dict:  # noqa: N802
        chat = self._own_chat(user_id, body)
        return {"chat": {"id": chat.id, "name": chat.name, "createTime": _iso(chat.created_at),
                         "updateTime": _iso(chat.created_at)}}

    def _ListMessages(self, user_id: str, body: dict) -> dict:  # noqa: N802
        chat = self._own_chat(user_id, body)
        return {"messages": [{"id": m["id"], "parentId": m["parentId"], "role": m["role"],
                              "status": "MESSAGE_STATUS_COMPLETED", "blocks": [{"text": {"content": m["text"]}}]}
                             for m in reversed(chat.messages)]}

    def _GetAvailableModels(self, user_id: str, _body: dict) -> dict:  # noqa: N802
        if self.state.models.fail:
            raise ConnectError("unavailable", "config service unavailable", 503)
        return self.state.models.answer(user_id)

    def _GetSubscription(self, user_id: str, _body: dict) -> dict:  # noqa: N802
        return {"subscription": {"userId": user_id, "userName": self.state.users.get(user_id, {}).get("name", "")}}

    def _CancelChat(self, user_id: str, body: dict) -> dict:  # noqa: N802
        self._own_chat(user_id, body)
        return {}
