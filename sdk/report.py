"""Machine-readable progress lines for local runs (``bobravoz up`` reads them from stdout)."""

from __future__ import annotations

import json
import sys
from typing import Any


def report(event: str, **fields: Any) -> None:
    """Print one JSON object ``{"event": event, **fields}`` as a line on stdout, flushed."""
    sys.stdout.write(json.dumps({"event": event, **fields}, separators=(",", ":")) + "\n")
    sys.stdout.flush()
