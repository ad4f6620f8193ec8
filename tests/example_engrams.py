"""The example engram programs (``examples/engrams/<name>.py``) as modules, for tests of
their pure parts and handlers; imported like ``procs`` (tests/ is on ``sys.path``)."""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

ENGRAMS = Path(__file__).resolve().parents[1] / "examples" / "engrams"


@cache
def example_engram(name: str) -> ModuleType:
    """``examples/engrams/<name>.py`` as a module, loaded once. Its directory is on
    ``sys.path`` (last), as when it runs as a program, so it can import the shared ``toy``."""
    if str(ENGRAMS) not in sys.path:
        sys.path.append(str(ENGRAMS))
    module_name = "example_engram_" + name.replace("-", "_")
    spec = importlib.util.spec_from_file_location(module_name, ENGRAMS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
