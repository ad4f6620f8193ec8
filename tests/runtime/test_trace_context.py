"""runtime/tracing.py: the exporter rule, the root sampler, trace context carried in packet
metadata (as a mapping and as packet bytes), and the hub's span helper.

Spans go to OpenTelemetry's in-memory exporter (``configure_tracing(..., exporter=...)``), so
each test reads exactly the spans it made.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import StatusCode

from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, DataRequest
from bobravoz.protocol.validation import MAX_METADATA_PAIRS
from bobravoz.protocol.wire import PacketLayout
from bobravoz.runtime.envconfig import ConfigError
from bobravoz.runtime.tracing import (
    DISABLED,
    TRACEPARENT_KEY,
    TRACESTATE_KEY,
    Tracing,
    configure_tracing,
    extract_parent,
    hop_span,
    hub_span,
    inject_span,
    parse_tracing_settings,
    sampler_from_settings,
    start_hop,
    traced_packet,
    traces_endpoint,
)

#: A sampled parent from another process (W3C example ids).
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
SAMPLED = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"
NOT_SAMPLED = f"00-{PARENT_TRACE}-{PARENT_SPAN}-00"


@pytest.fixture
def exported() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracing = configure_tracing("test-service", {}, exporter=exporter)
    try:
        yield tracing, exporter
    finally:
        tracing.shutdown()


def ids(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def parent_id(span: ReadableSpan) -> str | None:
    return None if span.parent is None else f"{span.parent.span_id:016x}"


# ---------------------------------------------------------------------------------------------
# the exporter rule and the environment
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:1"}, False),
        ({"OTEL_TRACES_EXPORTER": " None "}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:1"}, False),
    ],
)
def test_spans_are_exported_only_when_the_environment_asks(
    environ: dict[str, str], enabled: bool
) -> None:
    tracing = configure_tracing("svc", environ)
    try:
        assert tracing.enabled is enabled
        assert tracing.scan_keys == ((b"traceparent",) if enabled else ())
    finally:
        tracing.shutdown()
    assert not tracing.enabled  # shut down: nothing more is recorded


def test_propagation_can_be_turned_off_and_bad_flags_are_named() -> None:
    tracing = configure_tracing(
        "svc", {"BUBU_TRACE_PROPAGATION": "off"}, exporter=InMemorySpanExporter()
    )
    try:
        assert tracing.enabled
        assert not tracing.propagate
        assert tracing.scan_keys == ()  # nothing to read or rewrite in packets
        metadata: dict[str, str] = {}
        span = start_hop(tracing, "sdk.emit", metadata, root=True)
        assert span is not None  # the root span is still recorded ...
        span.end()
        assert metadata == {}  # ... but nothing is written into the packet
        assert start_hop(tracing, "connector.send", {TRACEPARENT_KEY: SAMPLED}) is None
    finally:
        tracing.shutdown()
    with pytest.raises(ConfigError, match="BUBU_TRACE_PROPAGATION"):
        configure_tracing("svc", {"BUBU_TRACE_PROPAGATION": "maybe"})


def test_bad_tracing_settings_are_a_config_error_naming_the_variable() -> None:
    environ = {"OTEL_TRACES_EXPORTER": "otlp", "BOBRAVOZ_TRACING": '{"sampleRate": 101}'}
    with pytest.raises(ConfigError, match=r"BOBRAVOZ_TRACING.*sampleRate"):
        configure_tracing("svc", environ)
    with pytest.raises(ConfigError, match="BOBRAVOZ_TRACING"):
        configure_tracing("svc", {**environ, "BOBRAVOZ_TRACING": "{not json"})


def test_service_name_comes_from_otel_service_name_else_the_given_one() -> None:
    for environ, expected in (({}, "given"), ({"OTEL_SERVICE_NAME": "from-env"}, "from-env")):
        exporter = InMemorySpanExporter()
        tracing = configure_tracing(
            "given",
            {**environ, "OTEL_RESOURCE_ATTRIBUTES": "team=a%20b,region=x"},
            resource_attributes={"bobravoz.step": "s1"},
            exporter=exporter,
        )
        with hop_span(tracing, "sdk.emit", {}, root=True):
            pass
        tracing.shutdown()
        (span,) = exporter.get_finished_spans()
        attributes = span.resource.attributes
        assert attributes["service.name"] == expected
        assert attributes["bobravoz.step"] == "s1"
        assert attributes["team"] == "a b"
        assert attributes["region"] == "x"


def test_traces_endpoint_follows_the_otlp_variables() -> None:
    assert traces_endpoint({}) == "http://localhost:4318/v1/traces"
    assert traces_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:9/"}) == "http://h:9/v1/traces"
    assert (
        traces_endpoint(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:9",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/custom",
            }
        )
        == "http://t:1/custom"
    )


# ---------------------------------------------------------------------------------------------
# the root sampler
# ---------------------------------------------------------------------------------------------


def decide(settings: dict[str, object] | None, trace_id: int) -> bool:
    result = sampler_from_settings(settings).should_sample(None, trace_id, "sdk.emit")
    return result.decision is Decision.RECORD_AND_SAMPLE


#: Trace ids whose low 64 bits (what ratio sampling reads) are near 0 and near the maximum.
LOW_ID = (0xABC << 64) | 5
HIGH_ID = (0xABC << 64) | ((1 << 64) - 5)


@pytest.mark.parametrize(
    ("settings", "low", "high"),
    [
        (None, True, True),  # defaults: enabled, rate policy, 100 %
        ({}, True, True),
        ({"samplePolicy": "always", "sampleRate": 0}, True, True),
        ({"samplePolicy": "never"}, False, False),
        ({"enabled": False}, False, False),
        ({"enabled": False, "samplePolicy": "always"}, False, False),
        ({"sampleRate": 0}, False, False),
        ({"samplePolicy": "rate", "sampleRate": 50}, True, False),
        ({"samplePolicy": "random", "sampleRate": 0}, False, False),
        ({"samplePolicy": "random", "sampleRate": 100}, True, True),
    ],
)
def test_sampler_policies(settings: dict[str, object] | None, low: bool, high: bool) -> None:
    assert decide(settings, LOW_ID) is low
    assert decide(settings, HIGH_ID) is high


def test_rate_sampling_is_decided_by_the_trace_id() -> None:
    settings = {"samplePolicy": "rate", "sampleRate": 25}
    bound = 1 << 62  # a quarter of the 64-bit space
    for low_bits in (0, bound - 1, bound, bound + 1, (1 << 64) - 1):
        trace_id = (0x1234 << 64) | low_bits
        first = decide(settings, trace_id)
        assert first is (low_bits < bound)
        # Every process (and every call) decides the same for the same trace.
        assert all(decide(settings, trace_id) is first for _ in range(5))


def test_random_sampling_keeps_some_and_drops_some() -> None:
    sampler = sampler_from_settings({"samplePolicy": "random", "sampleRate": 50})
    decisions = {
        sampler.should_sample(None, LOW_ID, "sdk.emit").decision is Decision.RECORD_AND_SAMPLE
        for _ in range(200)
    }
    assert decisions == {True, False}  # the same trace id gets both: a coin, not the id


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"sampleRate": -1}, "sampleRate"),
        ({"sampleRate": "50"}, "sampleRate"),
        ({"sampleRate": True}, "sampleRate"),
        ({"samplePolicy": "sometimes"}, "samplePolicy"),
        ({"enabled": "yes"}, "enabled"),
    ],
)
def test_bad_settings_name_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        parse_tracing_settings(raw)


def test_the_sampler_applies_at_the_root_only() -> None:
    """``never`` makes no new traces, but a packet that arrives sampled is still traced."""
    exporter = InMemorySpanExporter()
    tracing = configure_tracing(
        "svc", {"BOBRAVOZ_TRACING": '{"samplePolicy": "never"}'}, exporter=exporter
    )
    try:
        root_metadata: dict[str, str] = {}
        assert start_hop(tracing, "sdk.emit", root_metadata, root=True) is None
        assert root_metadata == {}  # an unsampled root writes nothing (the hot path stays)
        with hop_span(tracing, "sdk.emit", {TRACEPARENT_KEY: SAMPLED}, root=True) as span:
            assert span is not None
    finally:
        tracing.shutdown()
    assert [span.name for span in exporter.get_finished_spans()] == ["sdk.emit"]


# ---------------------------------------------------------------------------------------------
# trace context in metadata
# ---------------------------------------------------------------------------------------------


def test_a_hop_chain_round_trips_through_metadata(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    metadata = {"kind": "x"}
    with hop_span(tracing, "sdk.emit", metadata, root=True) as root:
        assert root is not None
    root_ids = extract_parent(tracing, metadata)
    assert root_ids is not None
    # The next process sees exactly the root span in the packet's metadata ...
    (root_span,) = exporter.get_finished_spans()
    assert root_ids == ids(root_span)
    assert root_span.parent is None
    # ... and its hop becomes that span's child, writing its own context in turn.
    with hop_span(tracing, "connector.send", metadata, {"step": "a"}) as child:
        assert child is not None
    child_span = exporter.get_finished_spans()[-1]
    assert parent_id(child_span) == root_ids[1]
    assert ids(child_span)[0] == root_ids[0]
    assert extract_parent(tracing, metadata) == ids(child_span)
    assert child_span.attributes == {"step": "a"}
    assert metadata["kind"] == "x"


def test_a_hop_continues_a_remote_parent_and_keeps_its_tracestate(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    metadata = {TRACEPARENT_KEY: SAMPLED, TRACESTATE_KEY: "vendor=abc"}
    with hop_span(tracing, "connector.deliver", metadata):
        pass
    (span,) = exporter.get_finished_spans()
    assert ids(span)[0] == PARENT_TRACE
    assert parent_id(span) == PARENT_SPAN
    trace_id, span_id = ids(span)
    assert metadata[TRACEPARENT_KEY].startswith(f"00-{trace_id}-{span_id}-")
    assert metadata[TRACESTATE_KEY] == "vendor=abc"


@pytest.mark.parametrize(
    "metadata",
    [{}, {TRACEPARENT_KEY: NOT_SAMPLED}, {TRACEPARENT_KEY: "garbage"}, {"other": "1"}],
)
def test_no_span_without_a_sampled_parent_unless_root(
    exported: tuple[Tracing, InMemorySpanExporter], metadata: dict[str, str]
) -> None:
    tracing, exporter = exported
    before = dict(metadata)
    with hop_span(tracing, "connector.send", metadata) as span:
        assert span is None
    assert metadata == before
    assert exporter.get_finished_spans() == ()


def test_an_unsampled_parent_is_not_overridden_by_root(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    metadata = {TRACEPARENT_KEY: NOT_SAMPLED}
    with hop_span(tracing, "sdk.emit", metadata, root=True) as span:
        assert span is None
    assert metadata == {TRACEPARENT_KEY: NOT_SAMPLED}
    assert exporter.get_finished_spans() == ()


def test_a_failing_block_marks_its_span(exported: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = exported
    with pytest.raises(KeyError), hop_span(tracing, "hub.route", {TRACEPARENT_KEY: SAMPLED}):
        raise KeyError("boom")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR


def test_disabled_tracing_is_a_shared_no_op() -> None:
    metadata = {TRACEPARENT_KEY: SAMPLED}
    first = hop_span(DISABLED, "connector.send", metadata)
    assert first is hop_span(DISABLED, "sdk.emit", {}, root=True)
    with first as span:
        assert span is None
    assert start_hop(DISABLED, "x", metadata, root=True) is None
    assert metadata == {TRACEPARENT_KEY: SAMPLED}
    assert DISABLED.scan_keys == ()
    assert extract_parent(DISABLED, metadata) is None


def test_a_full_metadata_map_gets_no_traceparent(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    metadata = {f"k{index}": "v" for index in range(MAX_METADATA_PAIRS)}
    with hop_span(tracing, "sdk.emit", metadata, root=True) as span:
        assert span is not None
        inject_span(tracing, span, metadata)
    assert len(metadata) == MAX_METADATA_PAIRS  # the packet stays within the contract
    assert len(exporter.get_finished_spans()) == 1


# ---------------------------------------------------------------------------------------------
# the hub's helper and packets as bytes
# ---------------------------------------------------------------------------------------------


def test_hub_span_yields_the_updates_for_outgoing_packets(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    metadata = {TRACEPARENT_KEY: SAMPLED, "kind": "x"}
    with hub_span(tracing, metadata, {"step": "s"}) as updates:
        assert set(updates) == {TRACEPARENT_KEY}
    assert metadata == {TRACEPARENT_KEY: SAMPLED, "kind": "x"}  # the input is not changed
    (span,) = exporter.get_finished_spans()
    assert span.name == "hub.route"
    assert parent_id(span) == PARENT_SPAN
    assert extract_parent(tracing, updates) == ids(span)
    with hub_span(tracing, metadata, name="hub.primitive.join") as updates:
        pass
    assert exporter.get_finished_spans()[-1].name == "hub.primitive.join"


@pytest.mark.parametrize(
    "metadata", [{}, {"kind": "x"}, {TRACEPARENT_KEY: NOT_SAMPLED}, {TRACEPARENT_KEY: "bad"}]
)
def test_hub_span_yields_nothing_to_write_without_a_sampled_parent(
    exported: tuple[Tracing, InMemorySpanExporter], metadata: dict[str, str]
) -> None:
    tracing, exporter = exported
    with hub_span(tracing, metadata) as updates:
        assert updates == {}
    with hub_span(DISABLED, {TRACEPARENT_KEY: SAMPLED}) as updates:
        assert updates == {}
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize(
    ("message", "layout"),
    [(DataPacket, PacketLayout.DATA_PACKET), (DataRequest, PacketLayout.DATA_REQUEST)],
)
def test_traced_packet_rewrites_only_the_traceparent(
    exported: tuple[Tracing, InMemorySpanExporter],
    message: type[DataPacket] | type[DataRequest],
    layout: PacketLayout,
) -> None:
    tracing, exporter = exported
    original = message(
        metadata={TRACEPARENT_KEY: SAMPLED, "kind": "x"},
        payload=None,
        binary=BinaryFrame(payload=b"\x00\x01abc", mime_type="application/octet-stream"),
    )
    raw = bytes(original)
    out = traced_packet(tracing, "connector.send", raw, layout, {"step": "s"})
    (span,) = exporter.get_finished_spans()
    assert parent_id(span) == PARENT_SPAN
    assert span.attributes is not None
    assert span.attributes["packet_bytes"] == len(raw)
    decoded = message().parse(out)
    assert decoded.binary == original.binary
    assert decoded.metadata["kind"] == "x"
    assert extract_parent(tracing, decoded.metadata) == ids(span)


def test_traced_packet_leaves_other_packets_as_they_are(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    for metadata in ({"kind": "x"}, {TRACEPARENT_KEY: NOT_SAMPLED}):
        raw = bytes(DataPacket(metadata=metadata, binary=BinaryFrame(payload=b"p")))
        assert traced_packet(tracing, "connector.send", raw, PacketLayout.DATA_PACKET) is raw
    raw = bytes(DataPacket(metadata={TRACEPARENT_KEY: SAMPLED}))
    assert traced_packet(DISABLED, "connector.send", raw, PacketLayout.DATA_PACKET) is raw
    assert exporter.get_finished_spans() == ()
