"""server.uvloop: the server runs on uvloop by default and on the standard asyncio loop when told."""

from __future__ import annotations

import pytest

from tests.helpers import Stack, wait_until


@pytest.mark.parametrize("uvloop, expected", [(True, "uvloop"), (False, "standard asyncio")])
def test_the_configured_event_loop_serves_answers(tmp_path, uvloop, expected):
    stack = Stack(tmp_path, server={"uvloop": uvloop})
    try:
        wait_until(lambda: "event loop" in stack.server_log.read_text(), 30, "the event loop log line")
        assert f"serving on the {expected} event loop" in stack.server_log.read_text()
        for stream in (False, True):
            r = stack.post({"model": "kimi", "stream": stream, "messages": [{"role": "user", "content": "loop"}]})
            assert r.status_code == 200 and "loop" in r.text
    finally:
        stack.close()
