"""Unit: the connector's ``ProcessRequest`` framing of engram packets
(:func:`bobravoz.connector.hub_link.wrap_packet`) against the protocol's general one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bobravoz.connector.hub_link import wrap_packet
from bobravoz.protocol.packets import split_process_message, wrap_process_message


@given(size=st.one_of(st.integers(0, 300), st.sampled_from([16383, 16384, 2_097_151, 2_097_152])))
def test_wrap_packet_frames_like_the_protocol(size: int) -> None:
    packet = bytes(range(256)) * (size // 256) + bytes(size % 256)
    wrapped = wrap_packet(packet)
    assert wrapped == wrap_process_message(packet)
    assert split_process_message(wrapped) == (packet, None)
