"""Integration: refused handshakes, rejected packets and bad Story files, against a real hub."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trio
from procs import CLI, Proc, metric, open_cluster, scrape, wait_for_metric

from bobravoz.protocol.constants import PROCESS_METHOD
from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, ProcessRequest
from bobravoz.runtime.endpoints import parse_endpoint
from bobravoz.runtime.grpc_bridge import open_grpc_channel, open_grpc_loop
from bobravoz.runtime.handshake import BindingIdentity
from bobravoz.runtime.status import RemoteStatusError, StatusCode

pytestmark = pytest.mark.integration

STORY = """
apiVersion: bubustack.io/v1alpha1
kind: Story
metadata: {name: checks, namespace: default}
spec:
  pattern: realtime
  steps:
    - {name: producer, ref: {name: source}}
    - {name: consumer, ref: {name: sink}, needs: [producer]}
"""

GOOD = BindingIdentity(storyrun="run-1", namespace="default", step="producer", generation=1)


def headers(**changes: str | None) -> dict[str, str]:
    values: dict[str, str | None] = {**GOOD.headers(), **changes}
    return {key: value for key, value in values.items() if value is not None}


async def refusal(hub: Proc, metadata: dict[str, str]) -> RemoteStatusError:
    endpoint = parse_endpoint(hub.find("ready")["listen"])  # type: ignore[index]
    async with open_grpc_loop(), open_grpc_channel(endpoint) as channel:
        with pytest.raises(RemoteStatusError) as caught:
            async with channel.open_stream(PROCESS_METHOD, metadata):
                pass
    return caught.value


@pytest.mark.parametrize(
    ("changes", "code", "named"),
    [
        (
            {"bubu-transport-protocol": None},
            StatusCode.FAILED_PRECONDITION,
            "bubu-transport-protocol",
        ),
        ({"bubu-transport-protocol": "2.0.0"}, StatusCode.FAILED_PRECONDITION, "2.0.0"),
        ({"storyrun-name": None}, StatusCode.INVALID_ARGUMENT, "storyrun-name"),
        ({"storyrun-namespace": None}, StatusCode.INVALID_ARGUMENT, "storyrun-namespace"),
        ({"current-step-id": None}, StatusCode.INVALID_ARGUMENT, "current-step-id"),
        ({"connector-generation": "0"}, StatusCode.FAILED_PRECONDITION, "connector-generation"),
        ({"connector-generation": None}, StatusCode.FAILED_PRECONDITION, "connector-generation"),
        ({"current-step-id": "nope"}, StatusCode.NOT_FOUND, "'nope'"),
        ({"storyrun-namespace": "elsewhere"}, StatusCode.NOT_FOUND, "elsewhere"),
    ],
)
async def test_handshake_refusals(
    tmp_path: Path, changes: dict[str, str | None], code: StatusCode, named: str
) -> None:
    (tmp_path / "story.yaml").write_text(STORY)
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(tmp_path / "story.yaml")
        error = await refusal(hub, headers(**changes))
        assert error.code == code
        assert named in error.message
        samples = await trio.to_thread.run_sync(scrape, hub.find("ready")["metrics"])
        assert metric(samples, "bobravoz_handshakes_rejected_total") == 1


async def test_bad_packets_are_rejected_counted_and_the_stream_keeps_flowing(
    tmp_path: Path,
) -> None:
    (tmp_path / "story.yaml").write_text(STORY)
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(tmp_path / "story.yaml")
        consumer = await cluster.connector(hub, "consumer")
        del consumer
        endpoint = parse_endpoint(hub.find("ready")["listen"])  # type: ignore[index]
        good = bytes(ProcessRequest(packet=DataPacket(binary=BinaryFrame(payload=b"ok"))))
        bad_metadata = bytes(ProcessRequest(packet=DataPacket(metadata={"k" * 129: "v"})))
        bad_frame = bytes(
            ProcessRequest(packet=DataPacket(binary=BinaryFrame(mime_type="m" * 256)))
        )
        malformed = b"\x0a\x05\xff\xff"
        async with (
            open_grpc_loop(),
            open_grpc_channel(endpoint) as channel,
            channel.open_stream(PROCESS_METHOD, headers()) as stream,
        ):
            await stream.send_batch([good, bad_metadata, good, bad_frame, malformed, good])
            address = hub.find("ready")["metrics"]
            samples = await wait_for_metric(
                address, "bobravoz_packets_out_total", 3, binding="default/run-1/consumer"
            )
        rejected = {
            labels: value
            for (name, labels), value in samples.items()
            if name == "bobravoz_packets_rejected_total"
        }
        reasons = {dict(labels)["reason"]: value for labels, value in rejected.items()}
        assert reasons == {"too_long": 2.0, "malformed": 1.0}


def test_malformed_story_is_refused_with_the_field_path(tmp_path: Path) -> None:
    story = tmp_path / "bad.yaml"
    story.write_text(STORY.replace("needs: [producer]", "needs: producer-not-a-list"))
    done = subprocess.run(
        [*CLI, "hub", "--listen", "127.0.0.1:0", "--story", str(story)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "$.spec.steps[1].needs" in done.stderr
    assert str(story) in done.stderr


async def test_newer_generation_replaces_older_and_stale_one_is_refused(tmp_path: Path) -> None:
    (tmp_path / "story.yaml").write_text(STORY)
    async with open_cluster(tmp_path) as cluster:
        hub = await cluster.hub(tmp_path / "story.yaml")
        endpoint = parse_endpoint(hub.find("ready")["listen"])  # type: ignore[index]
        async with (
            open_grpc_loop(),
            open_grpc_channel(endpoint) as channel,
            channel.open_stream(PROCESS_METHOD, headers(**{"connector-generation": "2"})) as old,
        ):
            with pytest.raises(RemoteStatusError) as stale:
                async with channel.open_stream(
                    PROCESS_METHOD, headers(**{"connector-generation": "1"})
                ):
                    pass
            assert stale.value.code == StatusCode.FAILED_PRECONDITION
            assert "older" in stale.value.message
            async with channel.open_stream(
                PROCESS_METHOD, headers(**{"connector-generation": "3"})
            ) as new:
                with pytest.raises(RemoteStatusError) as replaced, trio.fail_after(10):
                    await old.receive_batch()
                assert replaced.value.code == StatusCode.ABORTED
                assert "generation 3" in replaced.value.message
                await new.send(bytes(ProcessRequest(packet=DataPacket(metadata={"k": "v"}))))
                await wait_for_metric(
                    hub.find("ready")["metrics"],
                    "bobravoz_packets_in_total",
                    1,
                    binding="default/run-1/producer",
                )
