"""Code shared by the refresher and the server: config, store, token claims, logging."""
