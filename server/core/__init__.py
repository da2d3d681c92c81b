"""The dialect-neutral core: the canonical request, answer events, neutral errors, conversations, models."""
