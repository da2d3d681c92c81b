"""Client dialects: each parses its requests into the canonical request and renders canonical events."""
