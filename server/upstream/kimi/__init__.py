"""Kimi's web protocols."""
