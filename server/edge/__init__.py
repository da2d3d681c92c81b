"""The HTTP edge: Tornado handlers, the SSE writer, the local API key."""
