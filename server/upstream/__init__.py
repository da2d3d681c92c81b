"""Kimi upstream: accounts, failover, chat deletion, the HTTP client and Kimi's two protocols."""
