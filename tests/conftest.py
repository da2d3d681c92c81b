"""Shared fixtures."""

from __future__ import annotations

import pytest

from tests.helpers import Emulator


@pytest.fixture
def emulator(tmp_path):
    """A fresh emulator process playing the 2026 web (strict rotation, 900 s access tokens)."""
    emu = Emulator(tmp_path)
    yield emu
    emu.close()


@pytest.fixture
def legacy_emulator(tmp_path):
    """A fresh emulator process playing the legacy REST web (REST, the GET refresh and Connect)."""
    emu = Emulator(tmp_path, web="legacy")
    yield emu
    emu.close()


@pytest.fixture
def stack(tmp_path):
    """Emulator plus a server with one account (tokens minted by the emulator)."""
    from tests.helpers import Stack
    s = Stack(tmp_path)
    yield s
    s.close()


@pytest.fixture(params=["rest", "connect"])
def any_stack(request, tmp_path):
    """The same stack over each of Kimi's protocols: REST against the legacy web, Connect against the 2026 web."""
    from tests.helpers import Stack
    s = Stack(tmp_path, protocol=request.param)
    yield s
    s.close()
