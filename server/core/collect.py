"""Every non-stream path: an answer's events gathered into one whole answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

from server.core.events import Collected, Event, Failed, Finish, ReasoningDelta, Source, TextDelta, ToolCallEnd


async def collect(batches: AsyncIterator[list[Event]]) -> Collected:
    """Read the answer to its end; a Failed event is raised as its Failure."""
    whole, reasoning = Collected(), []
    async for batch in batches:
        for event in batch:
            if isinstance(event, (TextDelta, Source)):
                whole.content.append(event)
            elif isinstance(event, ReasoningDelta):
                reasoning.append(event.text)
            elif isinstance(event, ToolCallEnd):
                whole.calls.append(event)
            elif isinstance(event, Finish):
                whole.finish = event
            elif isinstance(event, Failed):
                raise event.failure
    whole.reasoning = "".join(reasoning)
    return whole
