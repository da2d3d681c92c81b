"""One open answer: Kimi's turn read as typed events, with tool calls parsed and structured output checked."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from server.chat.turn_plan import TurnPlan
from server.core.errors import UPSTREAM_FAILED, Failure
from server.core.events import (Event, Failed, Finish, ReasoningDelta, Source, TextDelta, ToolCallDelta, ToolCallStart,
                                Usage)
from server.core.models import ModelChoice
from server.core.request import ChatRequest
from server.core.usage import estimate_tokens
from server.emulation.structured import check_answer, reask_prompt
from server.emulation.tool_parser import ToolCallParser
from server.upstream.completion_service import CompletionService
from server.upstream.errors import UpstreamError
from server.upstream.turn import ChatTarget, Turn, TurnRequest


class Answer:
    """Batches of events for one request (an empty batch: the upstream is silent, time for a keepalive).

    A failure after the answer began is the last batch: `[Failed(failure)]`."""

    def __init__(self, completions: CompletionService, request: ChatRequest, choice: ModelChoice, plan: TurnPlan,
                 prompt: str, turn: Turn, keepalive: float) -> None:
        self.completions, self.request, self.choice, self.plan = completions, request, choice, plan
        self.keepalive = keepalive
        self.turn = turn
        self.completion_id = turn.chat_id if plan.reply_with_chat_id else None
        self.closed = False
        self._prompts = [prompt]
        self._output: list[str] = []   # everything the answer produced, for the usage estimate
        self._reasoning: list[str] = []
        self._structured = request.response_format if request.response_format.kind != "text" else None
        self._parser = self._new_parser()

    def _new_parser(self) -> ToolCallParser | None:
        """A parser for the calls this request allows (a named choice allows that one tool), or None."""
        request = self.request
        if not request.offers_tools:
            return None
        names = [request.tool_choice.name] if request.tool_choice.mode == "named" else [t.name for t in request.tools]
        return ToolCallParser(names, request.parallel_tool_calls)

    @property
    def model(self) -> str:
        """The model name the caller asked for (echoed back)."""
        return self.choice.requested

    def close(self) -> None:
        """The caller hung up: close the upstream request at once rather than let it run on."""
        self.closed = True
        self.turn.close()

    def dispose(self) -> None:
        """Close the upstream stream; its chat is deleted in the background unless kept."""
        self.completions.dispose(self.turn)

    async def batches(self) -> AsyncIterator[list[Event]]:
        """The answer's events, then a Finish; or a Failed when Kimi breaks off or the JSON stays invalid."""
        try:
            async for batch in self._batches():
                yield batch
        except Failure as failure:
            yield [Failed(failure)]

    async def _batches(self) -> AsyncIterator[list[Event]]:
        held: list[str] = []   # a structured answer is checked whole before any of it is sent
        reasked, sent_at = False, time.monotonic()
        while True:
            finish, out = None, []
            try:
                async for batch in self.turn.events():
                    out = []
                    for event in batch:
                        if isinstance(event, Finish):
                            finish = event
                        else:
                            self._take(event, out, held)
                    if finish is not None:
                        break   # the batch's events go out with the finish
                    if out or not batch:
                        yield out
                        sent_at = time.monotonic()
                    elif time.monotonic() - sent_at >= self.keepalive:
                        # Kimi is writing what is held back (a structured answer, a tool call): a keepalive
                        # keeps proxies from closing a stream that looks silent.
                        yield []
                        sent_at = time.monotonic()
            except UpstreamError as exc:
                await self.completions.broke(self.turn, exc)
                raise exc.to_failure() from None
            if finish is None:   # a protocol ends its events with a Finish or an error; never trust that blindly
                raise Failure(UPSTREAM_FAILED, "Kimi upstream error: the answer ended without its end",
                              code="upstream_error")
            last: list[Event] = out
            if self._parser is not None:
                self._pass_text(self._parser.end(), last, held)
            if self._structured is not None and not self._calls:
                result = check_answer(self._structured, "".join(held))
                if not result.ok and not reasked:
                    reasked, held = True, []
                    if last:
                        yield last   # reasoning of the first attempt: the JSON itself is still held
                    if self.closed or not await self._reask(result.problem):
                        return   # the caller hung up: nobody is left to answer (no Finish, no new Kimi turn)
                    continue
                if not result.ok:
                    raise Failure(UPSTREAM_FAILED, "Kimi's answer is not the JSON value the response_format asks "
                                  f"for, even after one re-ask: {result.problem}", code="invalid_structured_output")
                last.append(TextDelta(result.json_text))
            await self._answered()
            reason = "tool_calls" if self._calls else finish.reason
            yield last + [Finish(reason, self._usage())]
            return

    def _take(self, event: Event, out: list[Event], held: list[str]) -> None:
        """One upstream event into the events the caller gets."""
        if isinstance(event, TextDelta):
            self._pass_text(self._parser.feed(event.text) if self._parser is not None else [event], out, held)
        elif isinstance(event, ReasoningDelta):
            self._reasoning.append(event.text)
            out.append(event)
        elif isinstance(event, Source):
            # A silent model shows none; nor does a JSON answer, which must be the JSON value and nothing else.
            if not self.choice.silent and self._structured is None:
                out.append(event)
        else:
            out.append(event)

    def _pass_text(self, events: list[Event], out: list[Event], held: list[str]) -> None:
        for event in events:
            if isinstance(event, TextDelta):
                self._output.append(event.text)
                if self._structured is not None and not self._calls:
                    held.append(event.text)   # may be the JSON answer: checked whole at the end
                    continue
            elif isinstance(event, ToolCallStart) and held:
                # Kimi called a tool, so no JSON answer is due: the text before the call goes out before it.
                out.append(TextDelta("".join(held)))
                held.clear()
            elif isinstance(event, ToolCallDelta):
                self._output.append(event.arguments)
            out.append(event)

    @property
    def _calls(self) -> int:
        return self._parser.calls if self._parser is not None else 0

    async def _reask(self, problem: str) -> bool:
        """Ask again in the same Kimi chat, naming what was wrong; that chat's fate goes with the new turn.

        False when the caller hung up while Kimi was being asked (the new turn is closed at once)."""
        first = self.turn
        target = ChatTarget(self.choice.agent_id, first.account.name, first.chat_id, first.parent_id, first.protocol,
                            keep=first.keep)
        prompt = reask_prompt(self._structured, problem)
        self._prompts.append(prompt)
        self.turn = await self.completions.open(target, TurnRequest(prompt, self.choice, self.request.use_search))
        first.keep = True   # the chat lives on in the re-ask; it is deleted (or kept) with the last turn
        self.completions.dispose(first)
        self._parser = self._new_parser()   # a fresh answer: its calls, if any, are counted anew
        if self.closed:
            self.turn.close()
            return False
        return True

    async def _answered(self) -> None:
        """Before the last event goes out: a Connect conversation continues after this answer next time."""
        if self.plan.record and self.turn.parent_id:
            await self.plan.record(self.turn)

    def _usage(self) -> Usage:
        reasoning = estimate_tokens("".join(self._reasoning))
        return Usage(sum(estimate_tokens(p) for p in self._prompts),
                     estimate_tokens("".join(self._output)) + reasoning, reasoning)
