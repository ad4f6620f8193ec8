"""Write the committed seed corpus, ``tests/fuzz/corpus/<target>/`` (run after a contract or
fixture change: ``.venv/bin/python tests/fuzz/make_corpus.py``).

Seeds are small valid inputs (packets encoded by the generated messages, example Stories,
fixture resources, AdmissionReviews of the fixture pods, environments as JSON) and a few
edge cases next to the limits. The fuzzers mutate them; the smoke test runs each one.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
from pathlib import Path

import yaml

from bobravoz.protocol.framing import frame_messages
from bobravoz.protocol.gen.google.protobuf import Struct
from bobravoz.protocol.gen.transport.v1 import (
    AudioFrame,
    BinaryFrame,
    DataPacket,
    DataRequest,
    FlowControl,
    HubPushRequest,
    PartitionAck,
    ProcessRequest,
    StreamEnvelope,
    TransportConfig,
    TransportDescriptor,
    VideoFrame,
)
from bobravoz.protocol.wire import encode_len_field, encode_string_field

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
STORIES = ROOT / "examples" / "stories"


def _payload() -> Struct:
    return Struct.from_dict({"text": "héllo", "n": 3, "ok": True, "list": [1, "a", None, {}]})


def _deep_struct(levels: int) -> bytes:
    """A Struct nested ``levels`` deep ({"k": {"k": ...}}), as raw bytes."""
    data = b""
    for _ in range(levels):
        value = encode_len_field(5, data)  # Value.struct_value
        data = encode_len_field(1, encode_string_field(1, "k") + encode_len_field(2, value))
    return data


def packets() -> dict[str, bytes]:
    """Packet bytes in the layouts of the contract, valid ones and edge cases."""
    envelope = StreamEnvelope(stream_id="ns/run/a", sequence=12, partition="p0")
    chunk = StreamEnvelope(
        stream_id="s", chunk_id="c1", chunk_index=1, chunk_count=3, chunk_bytes=4, total_bytes=12
    )
    return {
        "data-packet-binary": bytes(
            DataPacket(
                metadata={"trace": "t-1", "k": "v"},
                payload=_payload(),
                binary=BinaryFrame(payload=b"\x00\x01bytes", mime_type="application/json"),
                envelope=envelope,
            )
        ),
        "data-packet-heartbeat": bytes(DataPacket(metadata={"bubu-heartbeat": "true"})),
        "data-packet-audio-chunked": bytes(
            DataPacket(
                audio=AudioFrame(pcm=b"\x01\x02" * 4, sample_rate_hz=48000, channels=2),
                transports=[
                    TransportDescriptor(
                        name="t",
                        kind="grpc",
                        mode="hub",
                        typed_config=TransportConfig(transport_ref="grpc-default"),
                    )
                ],
                envelope=chunk,
            )
        ),
        "data-request-video": bytes(
            DataRequest(
                metadata={"a": "b"},
                inputs=_payload(),
                video=VideoFrame(payload=b"v", codec="h264", width=640, height=480),
            )
        ),
        "hub-push-request": bytes(
            HubPushRequest(metadata={"x": "y"}, binary=BinaryFrame(payload=b"p"))
        ),
        "edge-struct-33-deep": encode_len_field(2, _deep_struct(33)),
        "edge-key-not-utf8": encode_len_field(
            1, encode_len_field(1, b"\xff\xfe") + encode_len_field(2, b"v")
        ),
        "edge-truncated": bytes(DataPacket(metadata={"k": "v"}))[:-2],
        "edge-long-tag": b"\x8a\x80\x80\x80\x00\x00",
        "regression-entry-unknown-field": encode_len_field(
            1, encode_string_field(1, "bubu-heartbeat") + encode_len_field(5, b"\xf0")
        ),
    }


def process_messages() -> dict[str, bytes]:
    """``ProcessRequest`` bytes, as the hub reads them."""
    flow = FlowControl(ack=3, partition_acks=[PartitionAck(partition="p0")])
    return {
        "process-data": bytes(
            ProcessRequest(
                packet=DataPacket(
                    metadata={"k": "v"},
                    payload=_payload(),
                    binary=BinaryFrame(payload=b"x", mime_type="text/plain"),
                )
            )
        ),
        "process-heartbeat": bytes(
            ProcessRequest(packet=DataPacket(metadata={"bubu-heartbeat": "TRUE"}))
        ),
        "process-envelope": bytes(
            ProcessRequest(
                packet=DataPacket(
                    binary=BinaryFrame(payload=b"x"),
                    envelope=StreamEnvelope(stream_id="s", sequence=4),
                )
            )
        ),
        "process-flow-only": bytes(ProcessRequest(flow=flow)),
        "process-identity-key": bytes(
            ProcessRequest(packet=DataPacket(metadata={"storyrun-name": "other"}))
        ),
        "edge-two-packets": bytes(ProcessRequest(packet=DataPacket(metadata={"a": "1"}))) * 2,
    }


def frames() -> dict[str, bytes]:
    """gRPC length-prefixed framing."""
    whole = frame_messages([b"", b"abc", bytes(ProcessRequest(packet=DataPacket()))])
    return {
        "three-messages": whole,
        "incomplete": whole + b"\x00\x00\x00\x00\x09abc",
        "compressed": b"\x01\x00\x00\x00\x01x",
        "huge-prefix": b"\x00\xff\xff\xff\xffabc",
    }


def stories() -> dict[str, bytes]:
    """Example and fixture Stories, and a few that must be refused."""
    seeds = {
        "pipeline": (STORIES / "pipeline.yaml").read_bytes(),
        "p2p-chain": (FIXTURES / "stories" / "p2p-chain.yaml").read_bytes(),
        "fanout-rules-fanin": (FIXTURES / "stories" / "fanout-rules-fanin.yaml").read_bytes(),
    }
    seeds["edge-needs-later"] = (
        b"kind: Story\nmetadata: {name: s}\nspec:\n  pattern: realtime\n  steps:\n"
        b"  - {name: a, ref: {name: e}, needs: [b]}\n  - {name: b, ref: {name: e}}\n"
    )
    seeds["edge-batch-gate"] = (
        b"kind: Story\nmetadata: {name: s}\nspec:\n  steps:\n  - {name: a, ref: {name: e}}\n"
        b"  - {name: g, type: gate, needs: [a], if: '{{ x }}'}\n"
    )
    seeds["regression-not-utf8"] = seeds["edge-batch-gate"] + b"# caf\xe9\n"
    seeds["regression-deep-nesting"] = b"spec: " + b"[" * 400
    return seeds


def resources() -> dict[str, bytes]:
    """Fixture resources (every kind), one multi-document file among them."""
    folder = FIXTURES / "resources"
    return {
        "engram": (folder / "engram.yaml").read_bytes(),
        "storyrun-steprun": (folder / "storyrun.yaml").read_bytes()
        + b"---\n"
        + (folder / "steprun.yaml").read_bytes(),
        "transport": (folder / "transport-grpc-default.yaml").read_bytes(),
        "edge-binding-no-lane": (
            b"apiVersion: transport.bubustack.io/v1alpha1\nkind: TransportBinding\n"
            b"metadata: {name: b}\nspec: {transportRef: t, driver: grpc, stepName: s, "
            b"engramName: e}\n"
        ),
        "regression-not-utf8": (folder / "engram.yaml").read_bytes() + b"# \xad\n",
        "regression-deep-nesting": b"kind: Story\nspec: " + b"{a: " * 300,
    }


def streaming_settings() -> dict[str, bytes]:
    """``TransportStreamingSettings`` levels, as YAML."""
    story = yaml.safe_load((FIXTURES / "stories" / "fanout-rules-fanin.yaml").read_text())
    declared = [t["streaming"] for t in story["spec"]["transports"] if "streaming" in t]
    full = {
        "backpressure": {
            "buffer": {"maxMessages": 10, "maxBytes": 4096, "dropPolicy": "drop_oldest"}
        },
        "flowControl": {"mode": "credits", "initialCredits": {"messages": 5}},
        "routing": {"mode": "p2p", "maxDownstreams": 2},
        "lanes": [{"name": "audio", "kind": "audio", "direction": "publish"}],
    }
    return {
        "fixture-levels": yaml.safe_dump(declared).encode(),
        "two-levels": yaml.safe_dump(
            [full, {"backpressure": {"buffer": {"maxBytes": 1}}}]
        ).encode(),
        "edge-negative-buffer": b"backpressure: {buffer: {maxMessages: -1}}\n",
        "edge-zero-downstreams": b"routing: {maxDownstreams: 0}\n",
    }


def admission_reviews() -> dict[str, bytes]:
    """AdmissionReviews (``admission.k8s.io/v1``) of the fixture pods."""

    def wrap(pod: object, operation: str = "CREATE") -> bytes:
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "operation": operation,
                "namespace": "demo",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "object": pod,
            },
        }
        return json.dumps(review, separators=(",", ":")).encode()

    pods = FIXTURES / "pods"
    hub_pod = yaml.safe_load((pods / "engram-hub.yaml").read_text())
    bound = {
        "metadata": {"namespace": "demo", "labels": {"bubustack.io/engram": "bound"}},
        "spec": {"containers": [{"name": "engram", "image": "e:1"}]},
    }
    inline = {
        "metadata": {
            "namespace": "demo",
            "labels": {"bubustack.io/engram": "openai-stt"},
            "annotations": {"transport.bubustack.io/binding": _binding(payload="\u02b5")},
        },
        "spec": {"containers": [{"name": "engram", "image": "e:1"}]},
    }
    return {
        "engram-hub": wrap(hub_pod),
        "engram-p2p-inline": wrap(yaml.safe_load((pods / "engram-p2p-inline.yaml").read_text())),
        "plain-update": wrap(yaml.safe_load((pods / "plain.yaml").read_text()), "UPDATE"),
        "engram-annotation-binding": wrap(bound),
        "regression-binding-payload-not-ascii": wrap(inline),
        "regression-deep-nesting": b'{"request": ' + b"[" * 1000,
        "regression-labels-list": wrap(
            {"metadata": {"labels": ["bubustack.io/engram"]}, "spec": {"containers": [{}]}}
        ),
        "edge-no-request": b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}',
    }


def _binding(**extra: object) -> str:
    binding = {
        "transportRef": "bobravoz-grpc",
        "driver": "grpc",
        "endpoint": "unix:///tmp/sink.sock",
        "protocolVersion": "1.0.0",
    }
    binding.update(extra)  # type: ignore[arg-type]
    return json.dumps({"name": "run-sink-transport", "namespace": "default", "binding": binding})


def environments() -> dict[str, bytes]:
    """Environments (JSON objects) for the connector, the hub and an engram."""
    common = {
        "BUBU_HUB_ENDPOINT": "127.0.0.1:9000",
        "BUBU_GRPC_LOCAL_ENDPOINT": "unix:///tmp/bobravoz/sink.sock",
        "BUBU_CONNECTOR_GENERATION": "2",
        "BUBU_STORYRUN_ID": "r1",
        "BUBU_POD_NAMESPACE": "demo",
        "BUBU_STEP_NAME": "sink",
        "BUBU_TRANSPORT_BINDING": _binding(audioCodecs=["opus"]),
        "BUBU_GRPC_MESSAGE_TIMEOUT": "20s",
        "BUBU_STEP_CONFIG": '{"model": "x", "n": [1, 2]}',
        "BOBRAVOZ_HUB_MAX_STREAMS": "100",
        "BUBU_HUB_KEEPALIVE_TIME": "1m30s",
    }
    hub = {
        "BOBRAVOZ_HUB_IDENTITY": "off",
        "BUBU_HUB_MAX_RECV_BYTES": "1048576",
        "BOBRAVOZ_HUB_MAX_CONNECTIONS": "64",
        "BOBRAVOZ_HUB_IDLE_TIMEOUT": "250ms",
        "BUBU_GRPC_KEEPALIVE_TIMEOUT": "5s",
    }
    return {
        "all-three": json.dumps(common, indent=0).encode(),
        "hub": json.dumps(hub, indent=0).encode(),
        "regression-deep-step-config": json.dumps(
            {**common, "BUBU_STEP_CONFIG": "[" * 1000}, indent=0
        ).encode(),
        "edge-tls-without-files": json.dumps(
            {**common, "BUBU_TRANSPORT_SECURITY_MODE": "tls"}, indent=0
        ).encode(),
        "edge-lines": b"BUBU_HUB_ENDPOINT=[::1]:0\nBUBU_CONNECTOR_GENERATION=0x10\n",
        "regression-binding-not-utf8": b"BUBU_TRANSPORT_BINDING="
        + _binding().encode().replace(b"run-sink", b"run-\xd9sink"),
    }


def env_values() -> dict[str, bytes]:
    """Single values: durations, endpoints, integers, flags."""
    values = [
        "1m30s",
        "250ms",
        "1.5h2us",
        "-1s",
        "127.0.0.1:50051",
        "[::1]:9000",
        ":0",
        "unix:///tmp/x.sock",
        "true",
        "42",
        "-nan",
        "[\t:2",
    ]
    return {f"value-{index}": value.encode() for index, value in enumerate(values)}


def binding_envelopes() -> dict[str, bytes]:
    """``BUBU_TRANSPORT_BINDING`` values."""
    settings = base64.b64encode(b'{"env": {"A": "1"}}').decode()
    return {
        "plain": _binding().encode(),
        "codecs-payload": _binding(
            audioCodecs=["opus", "pcm16"], binaryTypes=["application/json"], payload=settings
        ).encode(),
        "edge-version": _binding(protocolVersion="2.0.0").encode(),
        "edge-not-object": b'["name"]',
        "regression-payload-not-ascii": _binding(payload="\u02b5").encode(),
        "regression-not-utf8": _binding().encode().replace(b"run-sink", b"run-\xd9sink"),
        "regression-deep-nesting": b'{"name": "n", "binding": ' + b"[" * 1000,
    }


def templates() -> dict[str, bytes]:
    """Story templates: the reference's, every construct, edge cases near the limits."""
    return {
        "hook-gate": b'{{ eq (default "" packet.type) "storyrun.ready" }}',
        "runtime-text": b"{{ steps.transcribe.text }} to {{ packet.metadata.participant }}",
        "range-printf": b'{{ range $i, $v := packet.items }}{{ printf "%03d" $v }},{{ end }}',
        "with-else": b"{{- with packet.missing -}}{{ . }}{{- else -}}none{{- end -}}",
        "json": b"{{ toJson inputs | b64enc | b64dec }}",
        "edge-budget": b"{{ range until 10000 }}{{ range until 10000 }}x{{ end }}{{ end }}",
        "edge-output": b'{{ repeat 100000 "x" }}',
        "edge-unclosed": b"{{ if packet.n }}",
        "edge-unknown-function": b"{{ nosuchfunction 1 }}",
        "regression-deep-parens": b"{{ " + b"(" * 300 + b"1" + b")" * 300 + b" }}",
    }


def structs() -> dict[str, bytes]:
    """Struct bytes and DataPackets whose payload, inputs and envelope the hub reads."""
    return {
        "payload": bytes(_payload()),
        "deep": _deep_struct(40),
        "data-packet": bytes(
            DataPacket(
                metadata={"lang": "en"},
                payload=_payload(),
                inputs=Struct.from_dict({"n": 1}),
                envelope=StreamEnvelope(stream_id="s", sequence=1, partition="p1"),
            )
        ),
        "edge-null-value-1": b"\n\x07\n\x01k\x12\x02\x08\x01",
        "edge-truncated": bytes(_payload())[:-3],
    }


CORPORA = {
    "validate_packet": packets,
    "wire": packets,
    "convert_layout": packets,
    "scan": process_messages,
    "framing": frames,
    "story": stories,
    "resources": resources,
    "streaming_settings": streaming_settings,
    "admission_review": admission_reviews,
    "environment": environments,
    "env_values": env_values,
    "binding_envelope": binding_envelopes,
    "template": templates,
    "struct": structs,
}


def main() -> int:
    """Rewrite every target's corpus folder; print each one's file count and size."""
    corpus = HERE / "corpus"
    for target, build in CORPORA.items():
        folder = corpus / target
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        seeds = build()
        for name, data in seeds.items():
            (folder / name).write_bytes(data)
        size = sum(len(data) for data in seeds.values())
        print(f"{target:20} {len(seeds):2} seeds {size:6} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
