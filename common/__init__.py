"""Code shared by the refresher and the server: config, store, token claims, logging."""

__version__ = "0.1.0"
