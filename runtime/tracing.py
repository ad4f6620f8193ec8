"""OpenTelemetry traces: one span per hop of a packet, one trace per packet's path.

Each process calls :func:`configure_tracing` once at start and :meth:`Tracing.shutdown` at exit
(it flushes what is still queued). Spans are exported over OTLP/HTTP (protobuf) only when the
environment asks for it, by the Go transport's rule: ``OTEL_TRACES_EXPORTER`` is not ``none``
and one of ``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (``OTEL_SDK_DISABLED=true`` turns it off too).
Otherwise :attr:`Tracing.enabled` is False, the OpenTelemetry SDK is never imported, and every
helper here returns at its first test.

The W3C trace context travels in packet metadata (keys :data:`TRACEPARENT_KEY` and
:data:`TRACESTATE_KEY`); ``BUBU_TRACE_PROPAGATION=false`` stops carrying it. A hop
(:func:`start_hop`, :func:`hop_span`) continues the trace of the packet it handles and writes
its own span's context back into the metadata, so the next hop becomes its child. Only the
first hop (the SDK's emit, ``root=True``) starts traces, sampled by the Story's
``observability.tracing`` settings (:func:`sampler_from_settings`, given to the process as the
JSON of env ``BOBRAVOZ_TRACING``); every later hop follows its parent's decision, and a packet
whose trace is not sampled gets no span anywhere.
"""

from __future__ import annotations

import json
import logging
import random
import urllib.parse
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, final

from bobravoz.protocol.packets import read_metadata, retarget_packet
from bobravoz.protocol.validation import MAX_METADATA_PAIRS
from bobravoz.protocol.wire import PacketLayout
from bobravoz.runtime.envconfig import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

#: Packet metadata key of the W3C ``traceparent`` header.
TRACEPARENT_KEY: Final = "traceparent"
#: Packet metadata key of the W3C ``tracestate`` header.
TRACESTATE_KEY: Final = "tracestate"
#: The metadata keys a hop rewrites.
TRACE_KEYS: Final[tuple[str, ...]] = (TRACEPARENT_KEY, TRACESTATE_KEY)
#: Env var holding the JSON of the Story's ``observability.tracing`` settings for a process.
TRACING_SETTINGS_ENV: Final = "BOBRAVOZ_TRACING"
#: Go's boolean spellings (``BUBU_TRACE_PROPAGATION``).
_TRUE: Final = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE: Final = frozenset({"0", "false", "f", "no", "n", "off"})
_DEFAULT_TRACES_ENDPOINT: Final = "http://localhost:4318/v1/traces"
_SAMPLE_POLICIES: Final = ("always", "never", "rate", "random")


@final
class Tracing:
    """A process's tracing: a tracer when spans are exported, else a disabled stand-in.

    ``enabled`` says spans are made and exported; ``propagate`` says the trace context is
    read from and written to packet metadata. ``scan_keys`` is what byte-forwarding paths pass
    to ``protocol.scan`` so that packets carrying a ``traceparent`` take their general path
    (empty when there is nothing to do for them). ``tracer`` and ``propagator`` are None when
    disabled; use the module's helpers rather than them.
    """

    __slots__ = ("_provider", "enabled", "propagate", "propagator", "scan_keys", "tracer")

    def __init__(
        self,
        *,
        provider: TracerProvider | None = None,
        propagate: bool = True,
    ) -> None:
        self._provider = provider
        self.tracer: Tracer | None = None
        self.propagator: TraceContextTextMapPropagator | None = None
        if provider is not None:
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )

            self.tracer = provider.get_tracer("bobravoz")
            self.propagator = TraceContextTextMapPropagator()
        self.enabled = provider is not None
        self.propagate = propagate
        self.scan_keys: tuple[bytes, ...] = (
            (TRACEPARENT_KEY.encode(),) if self.enabled and propagate else ()
        )

    def shutdown(self) -> None:
        """Export what is still queued (bounded by the exporter's timeout) and stop; later
        spans are not exported. Safe to call more than once and on a disabled instance."""
        provider, self._provider = self._provider, None
        self.tracer = None
        self.enabled = False
        self.scan_keys = ()
        if provider is not None:
            provider.force_flush()
            provider.shutdown()


#: Tracing off: every helper returns at once.
DISABLED: Final = Tracing()


def parse_flag(text: str | None, default: bool, name: str) -> bool:
    """A boolean in Go's spellings (1/true/t/yes/y/on, 0/false/f/no/n/off); ConfigError
    naming ``name`` for anything else; ``default`` when unset or blank."""
    if text is None or not text.strip():
        return default
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={text!r} is not a boolean (true/false, 1/0, yes/no, on/off)")


@final
@dataclass(frozen=True, slots=True)
class TracingSettings:
    """The ``observability.tracing`` settings of a step (A22 defaults)."""

    enabled: bool = True
    sample_rate: float = 100.0
    sample_policy: Literal["always", "never", "rate", "random"] = "rate"


def parse_tracing_settings(raw: Mapping[str, Any] | None) -> TracingSettings:
    """Typed settings from the ``observability.tracing`` object (camelCase keys ``enabled``,
    ``sampleRate`` 0..100, ``samplePolicy`` always|never|rate|random; unknown keys ignored).

    Raises ValueError naming the bad field.
    """
    if raw is None:
        return TracingSettings()
    if not isinstance(raw, Mapping):
        raise ValueError("observability.tracing must be an object")
    enabled = raw.get("enabled", True)
    if enabled is None:
        enabled = True
    if not isinstance(enabled, bool):
        raise ValueError(f"observability.tracing.enabled must be a boolean, got {enabled!r}")
    rate = raw.get("sampleRate", 100)
    if rate is None:
        rate = 100
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 100:
        raise ValueError(f"observability.tracing.sampleRate must be 0..100, got {rate!r}")
    policy: Any = raw.get("samplePolicy") or "rate"
    if policy not in ("always", "never", "rate", "random"):
        raise ValueError(
            f"observability.tracing.samplePolicy must be one of {', '.join(_SAMPLE_POLICIES)}, "
            f"got {policy!r}"
        )
    return TracingSettings(enabled=enabled, sample_rate=float(rate), sample_policy=policy)


def sampler_from_settings(raw: Mapping[str, Any] | None) -> Sampler:
    """The root sampler of ``observability.tracing`` (see :func:`parse_tracing_settings`).

    ``enabled: false`` or ``never`` samples nothing, ``always`` everything; ``rate`` keeps
    ``sampleRate`` percent of traces, decided by the trace id (every process decides the
    same); ``random`` keeps ``sampleRate`` percent by a coin toss per trace. Raises ValueError
    naming a bad field.
    """
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, TraceIdRatioBased

    settings = parse_tracing_settings(raw)
    if not settings.enabled or settings.sample_policy == "never":
        return ALWAYS_OFF
    if settings.sample_policy == "always":
        return ALWAYS_ON
    fraction = settings.sample_rate / 100.0
    if settings.sample_policy == "rate":
        return TraceIdRatioBased(fraction)
    return _random_sampler(fraction)


def _random_sampler(fraction: float) -> Sampler:
    """A sampler keeping ``fraction`` of the traces it is asked about, at random."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.trace import get_current_span

    class RandomSampler(Sampler):
        def should_sample(
            self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any
        ) -> SamplingResult:
            keep = fraction >= 1.0 or random.random() < fraction
            state = get_current_span(parent_context).get_span_context().trace_state
            if keep:
                return SamplingResult(Decision.RECORD_AND_SAMPLE, kwargs.get("attributes"), state)
            return SamplingResult(Decision.DROP, None, state)

        def get_description(self) -> str:
            return f"RandomSampler{{{fraction}}}"

    return RandomSampler()


def _exporting(environ: Mapping[str, str]) -> bool:
    """Go's rule: an exporter only when OTEL_TRACES_EXPORTER != none and something asks."""
    if parse_flag(environ.get("OTEL_SDK_DISABLED"), False, "OTEL_SDK_DISABLED"):
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(
        exporter
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def traces_endpoint(environ: Mapping[str, str]) -> str:
    """The OTLP/HTTP traces URL: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as is, else
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces``, else the standard local default."""
    signal = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if signal:
        return signal
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if base:
        return base.rstrip("/") + "/v1/traces"
    return _DEFAULT_TRACES_ENDPOINT


def _resource_attributes(text: str) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES`` (``k=v,k2=v2``, values percent-encoded)."""
    attributes: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = urllib.parse.unquote(value.strip())
    return attributes


def _integer(environ: Mapping[str, str], name: str) -> int | None:
    text = environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not an integer") from None
    if value < 0:
        raise ConfigError(f"{name}={text!r} must not be negative")
    return value


def configure_tracing(
    service_name: str,
    environ: Mapping[str, str],
    *,
    resource_attributes: Mapping[str, str] | None = None,
    exporter: SpanExporter | None = None,
) -> Tracing:
    """The process's tracing, from ``environ`` (see the module docstring).

    ``service.name`` is ``OTEL_SERVICE_NAME`` else ``service_name``; ``OTEL_RESOURCE_ATTRIBUTES``
    and ``resource_attributes`` are added to the resource. The root sampler comes from
    ``BOBRAVOZ_TRACING`` (JSON of ``observability.tracing``), parent-based for every span that
    has a parent. Spans go through a batch processor (``OTEL_BSP_*`` variables) to an OTLP/HTTP
    protobuf exporter at :func:`traces_endpoint` (compression from
    ``OTEL_EXPORTER_OTLP[_TRACES]_COMPRESSION``; headers, timeout and certificates as the
    exporter reads them from the process environment). A given ``exporter`` (tests) enables
    tracing whatever the environment says and receives each span as it ends.

    Raises ConfigError naming a malformed variable.
    """
    propagate = parse_flag(environ.get("BUBU_TRACE_PROPAGATION"), True, "BUBU_TRACE_PROPAGATION")
    if exporter is None and not _exporting(environ):
        return Tracing(propagate=propagate)
    raw_settings = environ.get(TRACING_SETTINGS_ENV, "").strip()
    try:
        settings = json.loads(raw_settings) if raw_settings else None
        root = sampler_from_settings(settings)
    except ValueError as error:
        raise ConfigError(f"{TRACING_SETTINGS_ENV}: {error}") from None

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased

    attributes: dict[str, str] = _resource_attributes(environ.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    attributes.update(resource_attributes or {})
    attributes["service.name"] = environ.get("OTEL_SERVICE_NAME", "").strip() or service_name
    provider = TracerProvider(sampler=ParentBased(root=root), resource=Resource.create(attributes))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(
            BatchSpanProcessor(
                _otlp_exporter(environ),
                max_queue_size=_integer(environ, "OTEL_BSP_MAX_QUEUE_SIZE"),
                schedule_delay_millis=_integer(environ, "OTEL_BSP_SCHEDULE_DELAY"),
                max_export_batch_size=_integer(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
                export_timeout_millis=_integer(environ, "OTEL_BSP_EXPORT_TIMEOUT"),
            )
        )
    return Tracing(provider=provider, propagate=propagate)


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol != "http/protobuf":
        log.warning("OTLP protocol %r is not supported; exporting over http/protobuf", protocol)
    exporter_name = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if "otlp" not in exporter_name.split(","):
        log.warning("OTEL_TRACES_EXPORTER=%r is not supported; exporting over OTLP", exporter_name)
    compression_text = (
        (
            environ.get("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION")
            or environ.get("OTEL_EXPORTER_OTLP_COMPRESSION")
            or "none"
        )
        .strip()
        .lower()
    )
    try:
        compression = Compression(compression_text)
    except ValueError:
        raise ConfigError(
            f"OTLP compression {compression_text!r}: one of none, gzip, deflate"
        ) from None
    return OTLPSpanExporter(endpoint=traces_endpoint(environ), compression=compression)


def start_hop(
    tracing: Tracing,
    name: str,
    metadata: MutableMapping[str, str],
    attributes: Mapping[str, str | int | float | bool] | None = None,
    *,
    root: bool = False,
) -> Span | None:
    """Start the span of one hop of the packet whose metadata is ``metadata``; the caller
    ends it (``span.end()``).

    The span is the child of the trace context in ``metadata``. Without one, ``root=True``
    starts a new trace (sampled by the root sampler) and anything else makes no span. A
    parent that is not sampled makes no span either. When a span is made, its context is
    written into ``metadata`` (unless propagation is off, or the metadata is full), so the
    next hop that reads it is its child. Returns the span, or None when there is none (the
    metadata is then unchanged).
    """
    tracer = tracing.tracer
    if tracer is None:
        return None
    from opentelemetry.context import Context
    from opentelemetry.trace import get_current_span, set_span_in_context

    propagator = tracing.propagator
    assert propagator is not None
    parent: Context | None = None
    if tracing.propagate and TRACEPARENT_KEY in metadata:
        extracted = propagator.extract(metadata)
        context = get_current_span(extracted).get_span_context()
        if context.is_valid:
            if not context.trace_flags.sampled:
                return None
            parent = extracted
    if parent is None and not root:
        return None
    span = tracer.start_span(name, context=parent or Context(), attributes=attributes)
    if not span.is_recording():
        span.end()
        return None
    if tracing.propagate and (TRACEPARENT_KEY in metadata or len(metadata) < MAX_METADATA_PAIRS):
        propagator.inject(metadata, context=set_span_in_context(span))
    return span


def inject_span(tracing: Tracing, span: Span, metadata: MutableMapping[str, str]) -> None:
    """Write ``span``'s context into ``metadata`` (the next hop becomes its child); nothing
    when propagation is off or the metadata already holds the contract's maximum of pairs."""
    propagator = tracing.propagator
    if propagator is None or not tracing.propagate:
        return
    if TRACEPARENT_KEY not in metadata and len(metadata) >= MAX_METADATA_PAIRS:
        return
    from opentelemetry.trace import set_span_in_context

    propagator.inject(metadata, context=set_span_in_context(span))


def extract_parent(tracing: Tracing, metadata: Mapping[str, str]) -> tuple[str, str] | None:
    """(trace id, span id) in hex of the trace context in ``metadata``, or None when there is
    none valid (or tracing is off)."""
    propagator = tracing.propagator
    if propagator is None or TRACEPARENT_KEY not in metadata:
        return None
    from opentelemetry.trace import get_current_span

    context = get_current_span(propagator.extract(metadata)).get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


@contextmanager
def _hop(
    tracing: Tracing,
    name: str,
    metadata: MutableMapping[str, str],
    attributes: Mapping[str, str | int | float | bool] | None,
    root: bool,
) -> Iterator[Span | None]:
    span = start_hop(tracing, name, metadata, attributes, root=root)
    if span is None:
        yield None
        return
    try:
        yield span
    except BaseException as error:
        _record_failure(span, error)
        raise
    finally:
        span.end()


def _record_failure(span: Span, error: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, type(error).__name__))


_NO_SPAN: Final = nullcontext(None)


def hop_span(
    tracing: Tracing,
    name: str,
    metadata: MutableMapping[str, str],
    attributes: Mapping[str, str | int | float | bool] | None = None,
    *,
    root: bool = False,
) -> AbstractContextManager[Span | None]:
    """:func:`start_hop` as a context manager: the span (or None) for the block, ended when
    the block ends (status ERROR when it raises). A shared no-op when tracing is off."""
    if tracing.tracer is None:
        return _NO_SPAN
    return _hop(tracing, name, metadata, attributes, root)


@contextmanager
def _hub_hop(
    tracing: Tracing,
    metadata: Mapping[str, str],
    attributes: Mapping[str, str | int | float | bool] | None,
    name: str,
) -> Iterator[dict[str, str]]:
    carrier = {key: metadata[key] for key in TRACE_KEYS if key in metadata}
    with _hop(tracing, name, carrier, attributes, False) as span:
        if span is None:
            yield {}
        else:
            yield {key: value for key, value in carrier.items() if metadata.get(key) != value}


_NO_UPDATES: Final[nullcontext[dict[str, str]]] = nullcontext({})


def hub_span(
    tracing: Tracing,
    metadata: Mapping[str, str],
    attributes: Mapping[str, str | int | float | bool] | None = None,
    *,
    name: str = "hub.route",
) -> AbstractContextManager[dict[str, str]]:
    """A span for the hub's handling of one packet whose (decoded) metadata is ``metadata``.

    Yields the metadata updates (``traceparent``, and ``tracestate`` when it changed) to write
    into every packet the block sends on, so the next hop is a child of this span; an empty
    dict when there is no span (tracing off, no trace context, parent not sampled): then
    write nothing. ``metadata`` itself is not changed. The span ends with the block (status
    ERROR when it raises). Use ``name`` for a primitive's span (e.g. ``hub.primitive.join``).
    Do not mutate the yielded dict.
    """
    if tracing.tracer is None or TRACEPARENT_KEY not in metadata:
        return _NO_UPDATES
    return _hub_hop(tracing, metadata, attributes, name)


def traced_packet(
    tracing: Tracing,
    name: str,
    packet: bytes,
    layout: PacketLayout,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> bytes:
    """Run one hop's span over a packet held as bytes (a valid packet numbered as
    ``layout``): when its metadata carries a sampled trace context, a span ``name`` (child of
    it, ``packet_bytes`` added to ``attributes``) is recorded and the packet comes back with
    ``traceparent``/``tracestate`` rewritten to that span; otherwise ``packet`` is returned as
    it is. The span covers this call only: it marks the moment the hop handled the packet."""
    if tracing.tracer is None:
        return packet
    metadata = read_metadata(packet, layout)
    if TRACEPARENT_KEY not in metadata:
        return packet
    carrier = {key: metadata[key] for key in TRACE_KEYS if key in metadata}
    span = start_hop(tracing, name, carrier, {**(attributes or {}), "packet_bytes": len(packet)})
    if span is None:
        return packet
    try:
        updates = {key: value for key, value in carrier.items() if metadata.get(key) != value}
        if not updates:
            return packet
        return retarget_packet(packet, layout=layout, metadata_updates=updates, sequence=None)
    finally:
        span.end()
