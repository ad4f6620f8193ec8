"""Unit: settling the heap after start-up freezes the survivors and makes collections rarer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bobravoz.runtime.heap import YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_settle_heap_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    settle_heap()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD


def test_settle_heap_builds_every_message_codec_first() -> None:
    """In a fresh interpreter no generated message class has its codec metadata until first
    use; after ``settle_heap`` every one has it (so the first packets do not pay for it)."""
    import subprocess
    import sys

    code = """
import inspect, betterproto2
from bobravoz.protocol.gen.transport import v1
from bobravoz.protocol.gen.google import protobuf
classes = [c for m in (v1, protobuf) for c in vars(m).values()
           if inspect.isclass(c) and issubclass(c, betterproto2.Message)
           and c is not betterproto2.Message]
def built():
    return sum("_betterproto_meta" in vars(c) for c in classes)
before = built()
from bobravoz.runtime.heap import settle_heap
settle_heap()
print(before, built(), len(classes))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    before, after, total = map(int, done.stdout.split())
    assert total >= 20
    assert before < total
    assert after == total
