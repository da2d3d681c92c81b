"""The Tornado server: an OpenAI-compatible API in front of the Kimi web chat."""

from common import __version__

__all__ = ["__version__"]
