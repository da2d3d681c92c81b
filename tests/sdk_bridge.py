"""The openai SDK on a stack per protocol, and what Kimi received since a test began (tool and JSON tests)."""

from __future__ import annotations

import openai
import pytest

from tests.helpers import Stack


def stack_per_protocol(name: str, fixture: str = "sdk_stack"):
    """A module-scoped fixture named `fixture`: one stack per protocol for the whole module (tests reset the script)."""
    @pytest.fixture(scope="module", params=["rest", "connect"], name=fixture)
    def sdk_stack(request, tmp_path_factory):
        stack = Stack(tmp_path_factory.mktemp(f"{name}-{request.param}"), protocol=request.param)
        yield stack
        stack.close()
    return sdk_stack


def bridge_fixture(bridge_class: type):
    """A per-test fixture: a fresh `bridge_class` on the module's stack, the emulator's script reset around it."""
    @pytest.fixture
    def bridge(sdk_stack):
        sdk_stack.emulator.script(reset=True)
        bridge = bridge_class(sdk_stack)
        yield bridge
        bridge.client.close()
        sdk_stack.emulator.script(reset=True)
    return bridge


class SdkBridge:
    """The SDK client on a stack, and what Kimi received since the test began."""

    def __init__(self, stack: Stack) -> None:
        self.stack, self.emulator = stack, stack.emulator
        self.client = openai.OpenAI(base_url=stack.url + "/v1", api_key=Stack.API_KEY, max_retries=0, timeout=60)
        self._seen = len(self.emulator.prompts())
        self._created = self.emulator.stats()["chats_created"]

    def turns(self) -> list[dict]:
        """The turns Kimi received during this test."""
        return self.emulator.prompts()[self._seen:]

    def chats_created(self) -> int:
        return self.emulator.stats()["chats_created"] - self._created
