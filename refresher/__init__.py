"""The refresher daemon: keeps every Kimi account's access token fresh in config.json."""
