"""The Tornado server: an OpenAI-compatible API in front of the Kimi web chat."""

__version__ = "0.1.0"
