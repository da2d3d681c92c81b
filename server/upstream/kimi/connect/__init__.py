"""Kimi's Connect RPC protocol."""
