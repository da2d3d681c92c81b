"""POST /v1/chat/completions (OpenAI's dialect): parse, open Kimi's answer, then stream it or return it whole."""

from __future__ import annotations

from server.chat.answer import Answer
from server.core.collect import collect
from server.core.errors import METHOD_NOT_ALLOWED, Failure
from server.dialects.openai_chat.render import StreamRenderer, completion_body
from server.dialects.openai_chat.request import ParsedChat, parse_chat_request
from server.edge.base import ApiHandler
from server.edge.sse import SseWriter


class ChatCompletionsHandler(ApiHandler):
    """The OpenAI chat-completions endpoint; DELETE /v1/chat/completions/{id} ends a stateful conversation."""

    def initialize(self, services) -> None:
        super().initialize(services)
        self._answer: Answer | None = None

    @property
    def _turn(self):
        """The turn serving this request (the access log names its account)."""
        return self._answer.turn if self._answer is not None else None

    def on_connection_close(self) -> None:
        # The caller hung up: close the upstream request at once rather than let it run on.
        self.client_gone = True
        if self._answer is not None:
            self._answer.close()

    async def post(self, caller_id: str | None = None) -> None:
        parsed = parse_chat_request(self.json_body())
        chats = self.services.chats
        choice = chats.choose_model(parsed.request)
        async with chats.conversation(parsed.request, caller_id):
            if self.client_gone:
                return
            self._answer = await chats.open(parsed.request, choice, caller_id)
            try:
                if self.client_gone:
                    return
                if parsed.request.stream:
                    await self._stream(parsed)
                else:
                    await self._whole(parsed)
            finally:
                self._answer.dispose()

    async def _whole(self, parsed: ParsedChat) -> None:
        answer = self._answer
        whole = await collect(answer.batches())
        if whole.finish is None:
            if self.client_gone:
                return   # the answer stopped because the caller hung up
            raise RuntimeError("the answer ended without a Finish or a Failed event")
        self.send_json(completion_body(answer.model, whole, whole.finish.usage, answer.completion_id,
                                       parsed.legacy_functions))

    async def _stream(self, parsed: ParsedChat) -> None:
        answer = self._answer
        renderer = StreamRenderer(answer.model, parsed.request.include_usage, answer.completion_id,
                                  parsed.legacy_functions)
        await SseWriter(self).stream(renderer, answer.batches())

    async def delete(self, caller_id: str | None = None) -> None:
        """Forget a stateful conversation and delete its Kimi chat."""
        if caller_id is None:
            raise Failure(METHOD_NOT_ALLOWED, "DELETE needs a conversation id: /v1/chat/completions/{id}.",
                          code="method_not_allowed")
        chats = self.services.chats
        async with chats.conversation(None, caller_id):
            outcome = await chats.forget(caller_id)
        self.send_json({"id": caller_id, "object": "conversation.deleted", "deleted": True, **outcome})

    def write_error(self, status_code: int, **kwargs) -> None:
        if not self._headers_written:
            super().write_error(status_code, **kwargs)
