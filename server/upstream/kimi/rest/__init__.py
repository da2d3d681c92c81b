"""Kimi's REST + SSE protocol."""
