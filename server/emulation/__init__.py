"""Emulation of what Kimi's web chat lacks: the prompt builder, tool calls from markup, structured output."""
