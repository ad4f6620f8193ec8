"""A local OTLP/HTTP trace receiver and a terminal waterfall of one trace.

:class:`TraceReceiver` is a small trio HTTP/1.1 server on loopback that accepts what an
OpenTelemetry OTLP/HTTP exporter posts to ``/v1/traces`` (``application/x-protobuf``, plain,
gzip or deflate), decodes it with the official OpenTelemetry protobuf definitions
(``ExportTraceServiceRequest``), keeps every span as a :class:`ReceivedSpan` and answers
``200`` with an empty ``ExportTraceServiceResponse``. ``bobravoz up --trace`` points every
process at it and prints :func:`render_waterfall` of :func:`slowest_trace` after the run; the
tracing tests read it to check that one packet's spans form one trace.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, final

import trio
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

TRACES_PATH: Final = "/v1/traces"
#: Largest request head (request line and headers) read.
MAX_HEAD_BYTES: Final = 64 * 1024
#: Largest request body, before and after decompression.
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
_EMPTY_RESPONSE: Final = ExportTraceServiceResponse().SerializeToString()


@final
@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """One span as an exporter sent it: ids in lowercase hex (``parent_id`` empty for a root),
    times in Unix nanoseconds, ``service`` the resource's ``service.name``, ``step`` its
    ``bobravoz.step`` (empty when absent), ``attributes`` the span's attributes as text."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    start_ns: int
    end_ns: int
    step: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        """How long the span lasted, in milliseconds."""
        return max(0, self.end_ns - self.start_ns) / 1e6


def _text(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if kind in ("array_value", "kvlist_value"):
        return str(getattr(value, kind)).replace("\n", " ").strip()
    return str(getattr(value, kind))


def _attributes(values: Iterable[KeyValue]) -> dict[str, str]:
    return {item.key: _text(item.value) for item in values}


def decode_export(body: bytes) -> list[ReceivedSpan]:
    """The spans of one serialized ``ExportTraceServiceRequest``; DecodeError when it is not
    one."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        service = resource.get("service.name", "")
        step = resource.get("bobravoz.step", "")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        name=span.name,
                        service=service,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        step=step,
                        attributes=_attributes(span.attributes),
                    )
                )
    return spans


class _BadRequest(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def _inflate(body: bytes, encoding: str) -> bytes:
    """``body`` decoded from its ``Content-Encoding`` (identity, gzip or deflate), bounded."""
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflater = zlib.decompressobj()
    else:
        raise _BadRequest("415 Unsupported Media Type", f"content encoding {encoding!r}")
    try:
        data = inflater.decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error as error:
        raise _BadRequest("400 Bad Request", f"bad {encoding} body: {error}") from None
    if len(data) > MAX_BODY_BYTES:
        raise _BadRequest("413 Content Too Large", "decompressed body too large")
    return data


@final
class TraceReceiver:
    """Collects the spans OTLP/HTTP exporters post to it (see the module docstring).

    ``spans`` holds every span received, in arrival order; :meth:`wait_until` wakes on each
    request that brought spans. Start it with ``await nursery.start(receiver.serve)``, which
    gives its base URL (``endpoint``): the value of ``OTEL_EXPORTER_OTLP_ENDPOINT``.
    """

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        #: Requests refused (not OTLP traces, undecodable, too large).
        self.refused = 0
        self.port = 0
        self._changed = trio.Event()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>`` once serving."""
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1 (a free port) until cancelled; ``task_status`` gets the URL."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.endpoint)
        await trio.serve_listeners(self._serve_connection, listeners)

    def receive(self, body: bytes) -> int:
        """Take one serialized ``ExportTraceServiceRequest``: its spans are kept and waiters
        woken. Returns how many spans it held; DecodeError when it is not one."""
        spans = decode_export(body)
        if spans:
            self.spans.extend(spans)
            self._changed.set()
            self._changed = trio.Event()
        return len(spans)

    async def wait_until(self, condition: Callable[[Sequence[ReceivedSpan]], bool]) -> None:
        """Return once ``condition(spans)`` holds, checking again after each new batch."""
        while not condition(self.spans):
            await self._changed.wait()

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """The spans received so far, by trace id."""
        return group_traces(self.spans)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        buffer = bytearray()
        try:
            while True:
                head = await _read_head(stream, buffer)
                if head is None:
                    return
                method, path, headers = head
                try:
                    body = await _read_body(stream, buffer, headers)
                    status, payload, content_type = self._answer(method, path, headers, body)
                except _BadRequest as refusal:
                    self.refused += 1
                    status, payload, content_type = (
                        refusal.status,
                        str(refusal).encode(),
                        "text/plain",
                    )
                close = headers.get("connection", "").lower() == "close" or status.startswith(
                    ("400", "411", "413")
                )
                lines = [
                    f"HTTP/1.1 {status}",
                    f"Content-Type: {content_type}",
                    f"Content-Length: {len(payload)}",
                    *(["Connection: close"] if close else []),
                ]
                await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
                if close:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await stream.aclose()

    def _answer(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[str, bytes, str]:
        if path.split("?", 1)[0] != TRACES_PATH:
            raise _BadRequest("404 Not Found", f"only {TRACES_PATH} is served")
        if method != "POST":
            raise _BadRequest("405 Method Not Allowed", "POST only")
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != "application/x-protobuf":
            raise _BadRequest("415 Unsupported Media Type", "application/x-protobuf only")
        data = _inflate(body, headers.get("content-encoding", "").strip().lower())
        try:
            self.receive(data)
        except DecodeError as error:
            raise _BadRequest(
                "400 Bad Request", f"not an ExportTraceServiceRequest: {error}"
            ) from None
        return "200 OK", _EMPTY_RESPONSE, "application/x-protobuf"


async def _read_head(
    stream: trio.SocketStream, buffer: bytearray
) -> tuple[str, str, dict[str, str]] | None:
    """The next request's method, path and headers (lowercase names); None at a clean end."""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEAD_BYTES:
            raise trio.BrokenResourceError("request head too large")
        chunk = await stream.receive_some(65536)
        if not chunk:
            if buffer:
                raise trio.BrokenResourceError("connection closed inside a request head")
            return None
        buffer.extend(chunk)
    end = buffer.index(b"\r\n\r\n")
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise trio.BrokenResourceError("malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], headers


async def _read_body(
    stream: trio.SocketStream, buffer: bytearray, headers: Mapping[str, str]
) -> bytes:
    """The request body by ``Content-Length`` (chunked bodies are refused with 411)."""
    if "transfer-encoding" in headers:
        raise _BadRequest("411 Length Required", "send Content-Length, not chunked")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise _BadRequest("400 Bad Request", "bad Content-Length") from None
    if length < 0 or length > MAX_BODY_BYTES:
        raise _BadRequest("413 Content Too Large", f"body of {length} bytes")
    while len(buffer) < length:
        chunk = await stream.receive_some(max(65536, length - len(buffer)))
        if not chunk:
            raise trio.BrokenResourceError("connection closed inside a request body")
        buffer.extend(chunk)
    body = bytes(buffer[:length])
    del buffer[:length]
    return body


def group_traces(spans: Iterable[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    """``spans`` by trace id, each list in start order."""
    traces: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for span in spans:
        traces[span.trace_id].append(span)
    for members in traces.values():
        members.sort(key=lambda span: (span.start_ns, span.end_ns))
    return dict(traces)


def trace_duration_ns(spans: Sequence[ReceivedSpan]) -> int:
    """From the first span's start to the last span's end (0 for no spans)."""
    if not spans:
        return 0
    return max(span.end_ns for span in spans) - min(span.start_ns for span in spans)


def slowest_trace(spans: Iterable[ReceivedSpan]) -> list[ReceivedSpan]:
    """The spans of the trace that lasted longest (the slowest packet's path), in start
    order; empty when there are none."""
    traces = group_traces(spans)
    if not traces:
        return []
    return max(traces.values(), key=trace_duration_ns)


def _in_tree_order(spans: Sequence[ReceivedSpan]) -> list[tuple[int, ReceivedSpan]]:
    """(depth, span) depth-first, children by start time; spans whose parent is missing from
    ``spans`` are roots."""
    ids = {span.span_id for span in spans}
    children: dict[str, list[ReceivedSpan]] = defaultdict(list)
    roots: list[ReceivedSpan] = []
    for span in sorted(spans, key=lambda span: (span.start_ns, span.end_ns)):
        if span.parent_id and span.parent_id in ids and span.parent_id != span.span_id:
            children[span.parent_id].append(span)
        else:
            roots.append(span)
    ordered: list[tuple[int, ReceivedSpan]] = []
    seen: set[str] = set()
    stack = [(0, root) for root in reversed(roots)]
    while stack:
        depth, span = stack.pop()
        if span.span_id in seen:
            continue
        seen.add(span.span_id)
        ordered.append((depth, span))
        stack.extend((depth + 1, child) for child in reversed(children[span.span_id]))
    return ordered


def _process(span: ReceivedSpan) -> str:
    """``service[step]``, or just the service when it already names the step."""
    if span.step and not span.service.endswith(span.step):
        return f"{span.service}[{span.step}]"
    return span.service


def render_waterfall(spans: Sequence[ReceivedSpan], width: int = 40) -> str:
    """One trace as text: a header line, then one line per span in tree order (name indented
    by depth, the process as ``service[step]`` (the step left out when the service name ends
    with it), a bar of ``#`` placed and scaled on the
    trace's duration over ``width`` columns, and the span's duration in ms)."""
    if not spans:
        return "(no spans)"
    start = min(span.start_ns for span in spans)
    total = max(trace_duration_ns(spans), 1)
    rows = _in_tree_order(spans)
    labels = ["  " * depth + span.name for depth, span in rows]
    processes = [_process(span) for _, span in rows]
    label_width = max(len(label) for label in labels)
    process_width = max(len(process) for process in processes)
    services = len({(span.service, span.step) for span in spans})
    lines = [
        f"trace {spans[0].trace_id}: {total / 1e6:.3f} ms, {len(spans)} spans, {services} processes"
    ]
    for (_, span), label, process in zip(rows, labels, processes, strict=True):
        offset = min(width - 1, int((span.start_ns - start) * width / total))
        length = max(1, round(max(0, span.end_ns - span.start_ns) * width / total))
        length = min(length, width - offset)
        bar = " " * offset + "#" * length + " " * (width - offset - length)
        lines.append(
            f"{label:<{label_width}}  {process:<{process_width}}  |{bar}| "
            f"{span.duration_ms:9.3f} ms"
        )
    return "\n".join(lines)
