"""POST /api/chat/{id}/completion/stream: the SSE answer, with every stream fault of §4 item 13."""

from __future__ import annotations

import asyncio

import tornado.iostream

from tests.kimi_emulator import answers
from tests.kimi_emulator.base import ClientGone, KimiError, StreamingHandler
from tests.kimi_emulator.scripts import piece_count
from tests.kimi_emulator.state import Chat
from tests.kimi_emulator.tokens import xid


class CompletionStreamHandler(StreamingHandler):
    """Streams one answer; one stream per chat (or per user) at a time."""

    endpoint = "completion"
    _chunks: int | str | None = None   # a scripted answer's chunks; None: the stream switch's

    async def post(self, chat_id: str) -> None:
        body = self.body_json()
        if not await self.before(body):
            return
        user_id = self.authenticated_user()
        chat = self.state.chats.get(chat_id)
        if chat is None or chat.user_id != user_id:
            # JSON, not SSE: the "empty answer" trap of naive clients (pitfall 3b).
            raise KimiError(404, "chat.not_found", "找不到指定的会话")
        kimiplus_id = str(body.get("kimiplus_id") or chat.kimiplus_id)
        if not self.state.agent_shaped(kimiplus_id) or not self.state.agent_known(kimiplus_id):
            raise KimiError(404, "kimiplus.not_found", "找不到对应的KimiPlus")
        text = self._answer_text(chat, body)
        if self._busy(chat):
            raise KimiError(self.state.faults.stream_pushing_status, "chat.user_stream_pushing", "已有对话流正在输出")
        if body.get("action") != "continue":
            # Taken only once the stream will run: a refused request must not spend a test's scripted answer.
            scripted = self.state.script.take(answers.user_text(body))
            if scripted is not None:
                text, self._chunks = scripted.text, scripted.chunks
        if body.get("use_research"):
            self.state.research["used"] += 1
        chat.streaming = True
        self.state.open_streams += 1
        try:
            await self._stream(chat, body, text)
        except (ClientGone, tornado.iostream.StreamClosedError):
            self.state.streams_closed_by_client += 1
        finally:
            chat.streaming = False
            self.state.open_streams -= 1

    def _busy(self, chat: Chat) -> bool:
        if self.state.faults.stream_pushing_scope == "user":
            return any(c.streaming for c in self.state.chats.values() if c.user_id == chat.user_id)
        return chat.streaming

    def _answer_text(self, chat: Chat, body: dict) -> str:
        if body.get("action") == "continue":
            segment_id = str(body.get("segment_id") or "")
            owed = chat.segments.pop(segment_id, None)
            if owed is None:
                raise KimiError(400, "validation.error", "参数验证错误", ["unknown segment_id"])
            self._chunks = chat.segment_chunks.pop(segment_id, None)
            return owed
        prompt = answers.user_text(body)
        if not prompt.strip():
            raise KimiError(400, "validation.error", "参数验证错误", ["Content is a required field"])
        previous = next((m["content"] for m in reversed(chat.history) if m["role"] == "user"), "")
        turn = sum(1 for m in chat.history if m["role"] == "user") + 1
        template = self.state.faults.stream["answer"]
        text = template.format(prompt=prompt, turn=turn) if template else answers.default_answer(prompt, turn, previous)
        refs = [r for r in body.get("refs") or [] if isinstance(r, str)]
        unknown = [r for r in refs if r not in self.state.files]
        if unknown:
            raise KimiError(400, "file.not_found", "文件不存在", unknown)
        if refs:
            text += " [files: " + ", ".join(self.state.files[r]["name"] for r in refs) + "]"
        chat.history.append({"role": "user", "content": prompt})
        return text

    async def _stream(self, chat: Chat, body: dict, text: str) -> None:
        switches = self._switches = self.state.faults.stream_switches()
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.request.connection.stream.set_nodelay(True)
        req_id, resp_id, group_id = xid(), xid(), xid()
        prompt = answers.user_text(body)
        await self._send({"event": "req", "id": req_id, "group_id": group_id, "content": prompt,
                          "refs": body.get("refs") or []})
        await self._send({"event": "resp", "id": resp_id, "group_id": group_id})
        if body.get("use_search"):
            for event in answers.search_events(prompt, group_id, switches["search_results"]):
                await self._send(event)
        if answers.is_thinking(body):
            for event in answers.thinking_events(prompt, group_id, switches["k1_chunks"]):
                await self._send(event)
        cap = switches["length_cap"]
        sent, owed = (text, "") if not cap or len(text) <= cap else (text[:cap], text[cap:])
        chunks = switches["chunks"] if self._chunks is None else piece_count(self._chunks, sent)
        for index, piece in enumerate(answers.split_text(sent, chunks)):
            if index == switches["cut_after"]:
                self.request.connection.stream.close()
                return
            if index == switches["error_after"]:
                await self._send({"event": "error", "error": {
                    "error_type": "openai.completion.stream", "message": "Kimi 现在有点累了，晚一点再来问问我吧！",
                    "detail": "runtime error: injected by the emulator"}})
                return
            if index == switches["stall_after"]:
                await self.pacer.pause(switches["stall_seconds"])
            await self._send({"event": "cmpl", "text": piece, "idx_s": 0, "idx_z": 0, "view": "cmpl"})
        chat.history.append({"role": "assistant", "content": sent})
        if switches["rename"] and sum(1 for m in chat.history if m["role"] == "assistant") == 1:
            await self._send({"event": "rename", "text": prompt[:20] or "未命名会话"})
        if owed:
            chat.segments[req_id] = chat.segments[resp_id] = owed
            if self._chunks is not None:
                chat.segment_chunks[req_id] = chat.segment_chunks[resp_id] = self._chunks
            await self._send({"event": "length"})
        await self._send({"event": "all_done"})

    async def _send(self, event: dict) -> None:
        self.pacer.check()
        if self._switches["event_delay"]:
            await self.pacer.pace(self._switches["event_delay"])
        data = answers.frame(event)
        pieces = answers.split_frame(data) if self._switches["split_writes"] else [data]
        for piece in pieces:
            self.write(piece)
            await self.flush()
            if len(pieces) > 1:
                await asyncio.sleep(0)  # let each piece leave as its own TCP segment
