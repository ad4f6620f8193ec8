"""Reading the JSON event lines bobravoz processes print on stdout (readiness, results)."""

from __future__ import annotations

import json
import subprocess
from typing import Any


def read_event(process: subprocess.Popen[str], event: str) -> dict[str, Any]:
    """Read ``process``'s stdout up to the first JSON line whose ``event`` is ``event``.

    Raises RuntimeError (with the exit status) when the process ends first.
    """
    assert process.stdout is not None
    for line in process.stdout:
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("event") == event:
            return data
    raise RuntimeError(
        f"{process.args!r} ended (status {process.wait()}) before reporting {event!r}"
    )
