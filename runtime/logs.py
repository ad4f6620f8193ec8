"""Process logging: one format for every bobravoz process, on stderr (stdout carries JSON)."""

from __future__ import annotations

import logging
import os
import sys


def configure_logging(component: str) -> None:
    """Log to stderr at ``BOBRAVOZ_LOG_LEVEL`` (default INFO), lines tagged with ``component``."""
    logging.basicConfig(
        level=os.environ.get("BOBRAVOZ_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s {component} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
