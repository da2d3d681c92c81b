"""kimi-bridge test suite."""
