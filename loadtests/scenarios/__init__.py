"""Locust scenarios: each ``<name>.py`` beside a ``<name>.toml`` (setup and thresholds)."""
