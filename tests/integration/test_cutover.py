"""Integration: a consumer step cut over to a higher connector generation mid-stream.

Scope: a real ``bobravoz hub`` process (local mode, port 0, metrics on) with the producer and
both consumer generations as in-test grpclib clients over loopback, each generation on its own
connection as two connector pods would be. The producer streams about 2,000 packets/s for
about 2 s; halfway, generation 2 of the consumer connects. What the hub stamped (the
envelope's sequence) and what ``/metrics`` says must agree with what the clients saw: every
packet exactly once across the two generations, each in order, nothing counted lost, and no
stream left open afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
import trio
from procs import metric, open_cluster, wait_for_metric

from bobravoz.protocol.constants import PROCESS_METHOD
from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, ProcessRequest
from bobravoz.protocol.packets import (
    is_heartbeat,
    read_envelope,
    read_metadata,
    split_process_message,
)
from bobravoz.protocol.wire import PacketLayout
from bobravoz.runtime.endpoints import parse_endpoint
from bobravoz.runtime.grpc_bridge import ClientStream, open_grpc_channel, open_grpc_loop
from bobravoz.runtime.handshake import BindingIdentity
from bobravoz.runtime.status import RemoteStatusError, StatusCode

pytestmark = pytest.mark.integration

STORY = """
apiVersion: bubustack.io/v1alpha1
kind: Story
metadata: {name: cutover, namespace: default}
spec:
  pattern: realtime
  steps:
    - {name: producer, ref: {name: source}}
    - {name: consumer, ref: {name: sink}, needs: [producer]}
"""

DATA = PacketLayout.DATA_PACKET
RATE = 2000  # packets per second
TOTAL = 4000  # about 2 s at RATE
CONSUMER = "default/run-1/consumer"
PRODUCER = "default/run-1/producer"


def headers(step: str, generation: int = 1) -> dict[str, str]:
    return BindingIdentity(
        storyrun="run-1", namespace="default", step=step, generation=generation
    ).headers()


def request(number: int) -> bytes:
    return bytes(
        ProcessRequest(
            packet=DataPacket(metadata={"n": str(number)}, binary=BinaryFrame(payload=b"p" * 64))
        )
    )


def received(messages: Iterable[bytes]) -> list[tuple[int, int]]:
    """(hub sequence, producer number) of each data packet in ``messages``."""
    found: list[tuple[int, int]] = []
    for message in messages:
        packet, _flow = split_process_message(message)
        if packet is None or is_heartbeat(packet, DATA):
            continue
        envelope = read_envelope(packet, DATA)
        assert envelope is not None
        found.append((envelope.sequence, int(read_metadata(packet, DATA)["n"])))
    return found


async def produce(stream: ClientStream) -> None:
    """Send TOTAL packets at RATE per second, ten every 5 ms, then half-close."""
    start = trio.current_time()
    for first in range(0, TOTAL, 10):
        await trio.sleep_until(start + first / RATE)
        for number in range(first, first + 10):
            await stream.send(request(number))
    stream.close_send()


async def test_consumer_cutover_mid_stream_loses_nothing(tmp_path: Path) -> None:
    (tmp_path / "story.yaml").write_text(STORY)
    old: list[tuple[int, int]] = []
    new: list[tuple[int, int]] = []
    ended: list[RemoteStatusError | None] = []
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(tmp_path / "story.yaml")
        ready = hub.find("ready")
        assert ready is not None
        endpoint, address = parse_endpoint(ready["listen"]), ready["metrics"]
        with trio.fail_after(30):
            async with (
                open_grpc_loop(),
                open_grpc_channel(endpoint) as producer_pod,
                open_grpc_channel(endpoint) as old_pod,
                open_grpc_channel(endpoint) as new_pod,
                old_pod.open_stream(PROCESS_METHOD, headers("consumer", 1)) as first,
                producer_pod.open_stream(PROCESS_METHOD, headers("producer")) as producer,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(produce, producer)
                while len(old) < TOTAL // 2:
                    old.extend(received(await first.receive_batch()))

                async def old_generation_to_its_end() -> None:
                    try:
                        while True:
                            old.extend(received(await first.receive_batch()))
                    except RemoteStatusError as status:
                        ended.append(status)
                    except trio.EndOfChannel:
                        ended.append(None)

                nursery.start_soon(old_generation_to_its_end)
                async with new_pod.open_stream(PROCESS_METHOD, headers("consumer", 2)) as second:
                    while not new or new[-1][0] < TOTAL:
                        new.extend(received(await second.receive_batch()))
            samples = await wait_for_metric(address, "bobravoz_open_streams", 0)

    assert ended, "generation 1 never ended"
    assert ended[0] is not None
    assert ended[0].code == StatusCode.ABORTED
    old_sequences = [sequence for sequence, _ in old]
    new_sequences = [sequence for sequence, _ in new]
    missing = set(range(1, TOTAL + 1)) - set(old_sequences) - set(new_sequences)
    assert not missing, f"{len(missing)} packets reached neither generation"
    assert old_sequences == list(range(1, len(old) + 1)), "generation 1: gaps, repeats, order"
    assert new_sequences == list(range(len(old) + 1, TOTAL + 1)), "generation 2: the rest"
    assert [number for _, number in old + new] == list(range(TOTAL))
    assert len(old) >= TOTAL // 2
    assert len(new) > 0
    assert metric(samples, "bobravoz_packets_in_total", binding=PRODUCER) == TOTAL
    assert metric(samples, "bobravoz_packets_out_total", binding=CONSUMER) == TOTAL
    assert metric(samples, "bobravoz_packets_lost_total", binding=CONSUMER) == 0
    assert metric(samples, "bobravoz_packets_lost_total") == 0
    assert metric(samples, "bobravoz_packets_dropped_total") == 0
    assert metric(samples, "bobravoz_packets_in_flight", binding=CONSUMER) == 0
    assert metric(samples, "bobravoz_buffer_depth", binding=CONSUMER) == 0
    assert not [
        labels
        for (name, labels), _ in samples.items()
        if name == "bobravoz_packets_lost_total" and ("binding", CONSUMER) in labels
    ], "a lost series exists for the consumer"
