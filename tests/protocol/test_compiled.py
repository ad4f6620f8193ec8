"""The mypyc-compiled wire modules answer exactly like their pure-Python source.

``make`` compiles :mod:`bobravoz.protocol.scan` and :mod:`bobravoz.protocol.framing`; the
pure-Python modules are loaded here from their ``.py`` files and both are given the same
inputs. ``BOBRAVOZ_EXPECT_COMPILED=1`` (set by ``make pytest`` when it built them) also
requires that the compiled ones are what ``import`` finds.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bobravoz.protocol import framing, scan
from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, ProcessRequest

IDENTITY = {"storyrun-name": "run", "storyrun-namespace": "ns", "current-step-id": "sink"}


def pure(module: ModuleType) -> ModuleType:
    """``module`` loaded from its ``.py`` source, whatever ``import`` resolves it to."""
    source = Path(module.__file__ or "").with_suffix(".py")
    if not source.exists():
        source = Path(module.__file__ or "").parent / (module.__name__.rsplit(".", 1)[1] + ".py")
    name = f"_pure_{module.__name__.replace('.', '_')}"
    spec = importlib.util.spec_from_file_location(name, source)
    assert spec is not None
    assert spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


PURE_SCAN = pure(scan)
PURE_FRAMING = pure(framing)


def test_the_modules_imported_are_the_ones_make_built() -> None:
    """Compiled when ``make`` compiled them, pure-Python when it could not."""
    expected = os.environ.get("BOBRAVOZ_EXPECT_COMPILED")
    if expected is None:
        pytest.skip("run through make (it says whether it compiled the wire modules)")
    suffix = ".so" if expected == "1" else ".py"
    for module in (scan, framing):
        assert (module.__file__ or "").endswith(suffix), module.__file__
    assert (PURE_SCAN.__file__ or "").endswith(".py")


messages = st.one_of(
    st.binary(max_size=120),
    st.builds(
        lambda payload, meta: bytes(
            ProcessRequest(packet=DataPacket(metadata=meta, binary=BinaryFrame(payload=payload)))
        ),
        st.binary(max_size=64),
        st.dictionaries(
            st.sampled_from(["a", "bubu-heartbeat", "storyrun-name"]),
            st.sampled_from(["true", "x", "é"]),
        ),
    ),
)


@settings(max_examples=300, deadline=None)
@given(raw=messages, sequence=st.integers(0, 2**63))
def test_scan_and_stamp_match_the_pure_module(raw: bytes, sequence: int) -> None:
    compiled_stamp = scan.TargetStamp(metadata_updates=IDENTITY, stream_id="ns/run/sink")
    pure_stamp = PURE_SCAN.TargetStamp(metadata_updates=IDENTITY, stream_id="ns/run/sink")
    assert compiled_stamp.keys == pure_stamp.keys
    assert compiled_stamp.overhead == pure_stamp.overhead
    found = scan.scan_process(raw, 4096, compiled_stamp.keys)
    assert found == PURE_SCAN.scan_process(raw, 4096, pure_stamp.keys)
    kind, start, end, _, _ = found
    if kind in (scan.DATA, scan.HEARTBEAT):
        assert compiled_stamp.stamp(raw, start, end, sequence) == pure_stamp.stamp(
            raw, start, end, sequence
        )


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.binary(max_size=70), max_size=6), cut=st.integers(0, 80))
def test_framing_matches_the_pure_module(parts: list[bytes], cut: int) -> None:
    framed = framing.frame_messages(parts)
    assert framed == PURE_FRAMING.frame_messages(parts)
    data = framed[: max(0, len(framed) - cut)]
    assert framing.split_messages(data) == PURE_FRAMING.split_messages(data)
    assert framing.split_messages(framed) == (parts, b"")


def test_a_compressed_message_is_refused_by_both() -> None:
    data = b"\x01\x00\x00\x00\x01x"
    for module in (framing, PURE_FRAMING):
        with pytest.raises(ValueError, match="compressed"):
            module.split_messages(data)


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(messages, max_size=6), sequence=st.integers(1, 2**40))
def test_stamp_run_matches_the_pure_module(batch: list[bytes], sequence: int) -> None:
    compiled_stamp = scan.TargetStamp(metadata_updates=IDENTITY, stream_id="ns/run/sink")
    pure_stamp = PURE_SCAN.TargetStamp(metadata_updates=IDENTITY, stream_id="ns/run/sink")
    compiled_out: list[bytes] = []
    pure_out: list[bytes] = []
    found = scan.stamp_run(
        batch, 0, 4096, compiled_stamp.keys, compiled_stamp, sequence, compiled_out
    )
    expected = PURE_SCAN.stamp_run(batch, 0, 4096, pure_stamp.keys, pure_stamp, sequence, pure_out)
    assert found == expected
    assert compiled_out == pure_out
