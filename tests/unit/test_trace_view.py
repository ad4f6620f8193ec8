"""sdk/trace_view.py: the OTLP/HTTP receiver (requests built with the official OpenTelemetry
protobuf classes, over a real loopback socket), the slowest trace and the waterfall."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from bobravoz.runtime.tracing import configure_tracing, hop_span
from bobravoz.sdk.trace_view import (
    ReceivedSpan,
    TraceReceiver,
    decode_export,
    render_waterfall,
    slowest_trace,
)

TRACE = bytes(range(16))
OTHER_TRACE = bytes(range(16, 32))


def attribute(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def export_request(service: str, step: str, spans: list[Span]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=[
                        attribute("service.name", service),
                        attribute("bobravoz.step", step),
                    ]
                ),
                scope_spans=[ScopeSpans(spans=spans)],
            )
        ]
    )


def span(
    name: str, span_id: int, parent: int | None, start: int, end: int, trace: bytes = TRACE
) -> Span:
    return Span(
        trace_id=trace,
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=b"" if parent is None else parent.to_bytes(8, "big"),
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=[attribute("step", "a"), attribute("packet_bytes", 42)],
    )


def test_decode_export_reads_ids_names_times_and_the_resource() -> None:
    request = export_request(
        "bobravoz-connector",
        "transform",
        [span("connector.send", 2, 1, 1_000, 3_000), span("sdk.emit", 1, None, 500, 4_000)],
    )
    got = decode_export(request.SerializeToString())
    assert got == [
        ReceivedSpan(
            trace_id=TRACE.hex(),
            span_id="0000000000000002",
            parent_id="0000000000000001",
            name="connector.send",
            service="bobravoz-connector",
            start_ns=1_000,
            end_ns=3_000,
            step="transform",
            attributes={"step": "a", "packet_bytes": "42"},
        ),
        ReceivedSpan(
            trace_id=TRACE.hex(),
            span_id="0000000000000001",
            parent_id="",
            name="sdk.emit",
            service="bobravoz-connector",
            start_ns=500,
            end_ns=4_000,
            step="transform",
            attributes={"step": "a", "packet_bytes": "42"},
        ),
    ]
    assert got[0].duration_ms == 0.002


def identity(body: bytes) -> bytes:
    return body


@asynccontextmanager
async def serving() -> AsyncIterator[TraceReceiver]:
    receiver = TraceReceiver()
    async with trio.open_nursery() as nursery:
        endpoint = await nursery.start(receiver.serve)
        assert endpoint == f"http://127.0.0.1:{receiver.port}"
        yield receiver
        nursery.cancel_scope.cancel()


async def read_response(stream: trio.SocketStream) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        assert chunk, "connection closed before a response"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:])
    }
    length = int(headers["content-length"])
    while len(body) < length:
        body += await stream.receive_some()
    return status, headers, body


def post(body: bytes, *, path: str = "/v1/traces", encoding: str | None = None) -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/x-protobuf",
        f"Content-Length: {len(body)}",
    ]
    if encoding:
        head.append(f"Content-Encoding: {encoding}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def test_the_receiver_takes_plain_gzip_and_deflate_posts_on_one_connection() -> None:
    async with serving() as receiver:
        stream = await trio.open_tcp_stream("127.0.0.1", receiver.port)
        bodies: list[tuple[ExportTraceServiceRequest, str | None, Callable[[bytes], bytes]]] = [
            (export_request("a", "s", [span("sdk.emit", 1, None, 0, 10)]), None, identity),
            (export_request("b", "s", [span("x", 2, 1, 1, 9)]), "gzip", gzip.compress),
            (export_request("c", "s", [span("y", 3, 2, 2, 8)]), "deflate", zlib.compress),
        ]
        for request, encoding, compress in bodies:
            await stream.send_all(post(compress(request.SerializeToString()), encoding=encoding))
            status, headers, body = await read_response(stream)
            assert status == 200
            assert headers["content-type"] == "application/x-protobuf"
            response = ExportTraceServiceResponse()
            response.ParseFromString(body)
            assert not response.HasField("partial_success")
        await stream.aclose()
        assert [(s.service, s.name) for s in receiver.spans] == [
            ("a", "sdk.emit"),
            ("b", "x"),
            ("c", "y"),
        ]
        assert receiver.refused == 0


async def test_the_receiver_refuses_what_is_not_an_otlp_trace_export() -> None:
    async with serving() as receiver:
        for request, expected in (
            (post(b"", path="/v1/metrics"), 404),
            (b"GET /v1/traces HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
            (post(b"\xff\xff\xff"), 400),
            (post(b"not gzip", encoding="gzip"), 400),
            (post(b"x", encoding="br"), 415),
        ):
            stream = await trio.open_tcp_stream("127.0.0.1", receiver.port)
            await stream.send_all(request)
            status, _, _ = await read_response(stream)
            assert status == expected, request
            await stream.aclose()
        assert receiver.spans == []
        assert receiver.refused == 5


async def test_the_opentelemetry_exporter_reaches_the_receiver() -> None:
    """The real OTLP/HTTP exporter (gzip, as a collector would be sent it) and the receiver."""
    async with serving() as receiver:
        tracing = configure_tracing(
            "exporter-test",
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
                "OTEL_BSP_SCHEDULE_DELAY": "10",
            },
            resource_attributes={"bobravoz.step": "s"},
        )
        metadata: dict[str, str] = {}
        with hop_span(tracing, "sdk.emit", metadata, root=True):
            child_metadata = dict(metadata)  # what the next process reads from the packet
            with hop_span(tracing, "connector.send", child_metadata):
                pass
        await trio.to_thread.run_sync(tracing.shutdown)  # flushes (a blocking HTTP post)
        with trio.fail_after(10):
            await receiver.wait_until(lambda spans: len(spans) >= 2)
        (trace,) = receiver.traces().values()
        by_name = {span.name: span for span in trace}
        assert by_name["connector.send"].parent_id == by_name["sdk.emit"].span_id
        assert {span.service for span in trace} == {"exporter-test"}
        assert {span.step for span in trace} == {"s"}


def received(
    name: str, span_id: str, parent: str, start: int, end: int, trace: str = "t1", **extra: str
) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=trace,
        span_id=span_id,
        parent_id=parent,
        name=name,
        service=extra.get("service", "svc"),
        start_ns=start,
        end_ns=end,
        step=extra.get("step", ""),
    )


def test_slowest_trace_is_the_longest_from_first_start_to_last_end() -> None:
    spans = [
        received("a", "1", "", 0, 5_000_000, trace="fast"),
        received("a", "2", "", 100, 1_000_000, trace="slow"),
        received("b", "3", "2", 1_000_000, 9_000_000, trace="slow"),
        received("a", "4", "", 0, 8_000_000, trace="middle"),
    ]
    assert [span.span_id for span in slowest_trace(spans)] == ["2", "3"]
    assert slowest_trace([]) == []


def test_waterfall_indents_by_depth_and_scales_bars_to_the_trace() -> None:
    spans = [
        # Out of order on purpose: the waterfall orders by tree, then start.
        received("connector.send", "b", "a", 10_000_000, 20_000_000, service="conn", step="s"),
        received("sdk.emit", "a", "", 0, 40_000_000, service="bobravoz-engram-s", step="s"),
        received("sdk.handle", "d", "c", 30_000_000, 40_000_000, service="eng2"),
        received("connector.deliver", "c", "b", 20_000_000, 30_000_000, service="conn", step="s"),
    ]
    text = render_waterfall(spans, width=8)
    header, *lines = text.splitlines()
    assert header == "trace t1: 40.000 ms, 4 spans, 3 processes"
    assert lines == [
        "sdk.emit               bobravoz-engram-s  |########|    40.000 ms",
        "  connector.send       conn[s]            |  ##    |    10.000 ms",
        "    connector.deliver  conn[s]            |    ##  |    10.000 ms",
        "      sdk.handle       eng2               |      ##|    10.000 ms",
    ]


def test_waterfall_shows_spans_whose_parent_is_missing_as_roots() -> None:
    spans = [
        received("connector.deliver", "c", "gone", 5, 10),
        received("sdk.emit", "a", "", 0, 10),
    ]
    lines = render_waterfall(spans, width=10).splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["sdk.emit", "connector.deliver"]
    assert all(not line.startswith(" ") for line in lines)
    assert render_waterfall([]) == "(no spans)"
