"""Deterministic Kubernetes names, composed exactly as the BubuStack operator composes them."""

from __future__ import annotations

import hashlib
import re
from typing import Final

_INVALID: Final = re.compile(r"[^a-z0-9-]")
MAX_NAME: Final = 63


def compose_name(*parts: str) -> str:
    """Lower-case the parts, replace invalid characters with ``-`` and join them with ``-``;
    a result over 63 characters is cut to 50, trimmed of trailing ``-`` and suffixed with
    ``-`` and 12 hex digits of sha256 over the raw parts (each followed by a NUL byte)."""
    name = "-".join(_INVALID.sub("-", part.lower()) for part in parts)
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(b"".join(part.encode() + b"\0" for part in parts)).hexdigest()
    return f"{name[:50].rstrip('-')}-{digest[:12]}"


def workload_name(storyrun: str, step: str) -> str:
    """The realtime StepRun / Deployment / Service name of a step: ``<storyRun>-<step>``."""
    return compose_name(storyrun, step)


def binding_name(storyrun: str, step: str) -> str:
    """The TransportBinding name of a step: ``<storyRun>-<step>-transport``."""
    return compose_name(storyrun, step, "transport")
