"""A local stand-in for Kimi's web API (kimi-protocol.md §4), with fault switches and admin hooks."""

from tests.kimi_emulator.app import make_app
from tests.kimi_emulator.state import EmulatorState

__all__ = ["EmulatorState", "make_app"]
