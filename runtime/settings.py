"""``TransportStreamingSettings``: typed, every field optional, merged level by level.

Levels, least specific first: the Transport's ``spec.streaming`` defaults, then the Story
transport's ``streaming`` override. :func:`merge_settings` merges them field by field (a field
set at a more specific level wins; nested groups merge recursively; lists are replaced
whole). :func:`resolve_buffer` gives the buffer a hub or connector actually applies.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeVar, final

import msgspec

DEFAULT_MAX_MESSAGES: Final = 1000
DEFAULT_MAX_BYTES: Final = 10 * 1024 * 1024


class _Group(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """Base of every settings group: camelCase on the wire, unknown fields ignored."""


@final
class BufferSettings(_Group, frozen=True):
    """``backpressure.buffer``."""

    max_messages: int | None = None
    max_bytes: int | None = None
    max_age_seconds: float | None = None
    drop_policy: Literal["drop_newest", "drop_oldest"] | None = None


@final
class Backpressure(_Group, frozen=True):
    """``backpressure``."""

    buffer: BufferSettings | None = None


@final
class Credits(_Group, frozen=True):
    """``flowControl.initialCredits``."""

    messages: int | None = None
    bytes: int | None = None


@final
class AckEvery(_Group, frozen=True):
    """``flowControl.ackEvery``."""

    messages: int | None = None
    bytes: int | None = None
    max_delay: str | None = None


@final
class Threshold(_Group, frozen=True):
    """``flowControl.pauseThreshold`` / ``resumeThreshold``."""

    buffer_pct: int | None = None


@final
class FlowControlSettings(_Group, frozen=True):
    """``flowControl``."""

    mode: Literal["none", "credits", "window"] | None = None
    initial_credits: Credits | None = None
    ack_every: AckEvery | None = None
    pause_threshold: Threshold | None = None
    resume_threshold: Threshold | None = None


@final
class Replay(_Group, frozen=True):
    """``delivery.replay``."""

    mode: Literal["none", "memory", "durable"] | None = None
    retention_seconds: int | None = None
    checkpoint_interval: str | None = None


@final
class Delivery(_Group, frozen=True):
    """``delivery``."""

    ordering: Literal["none", "per_stream", "per_partition"] | None = None
    semantics: Literal["best_effort", "at_least_once"] | None = None
    replay: Replay | None = None


@final
class RuleTarget(_Group, frozen=True):
    """``routing.rules[].target``."""

    steps: tuple[str, ...] = ()


@final
class RoutingRule(_Group, frozen=True):
    """``routing.rules[]``."""

    name: str | None = None
    when: str | None = None
    action: Literal["allow", "deny"] | None = None
    target: RuleTarget | None = None


@final
class Routing(_Group, frozen=True):
    """``routing``."""

    mode: Literal["auto", "hub", "p2p"] | None = None
    fan_out: Literal["sequential", "parallel"] | None = None
    max_downstreams: int | None = None
    rules: tuple[RoutingRule, ...] | None = None


@final
class Lane(_Group, frozen=True):
    """``lanes[]``."""

    name: str
    kind: Literal["audio", "video", "binary", "payload", "control"] | None = None
    direction: Literal["publish", "subscribe", "bidirectional"] | None = None
    max_messages: int | None = None
    max_bytes: int | None = None


@final
class FanIn(_Group, frozen=True):
    """``fanIn``."""

    mode: Literal["all", "any", "quorum"] | None = None
    quorum: int | None = None
    timeout_seconds: int | None = None
    max_entries: int | None = None


@final
class Partitioning(_Group, frozen=True):
    """``partitioning``."""

    mode: Literal["none", "preserve", "hash"] | None = None
    key: str | None = None
    partitions: int | None = None
    sticky: bool | None = None


@final
class Lifecycle(_Group, frozen=True):
    """``lifecycle``."""

    strategy: Literal["rolling", "drain_cutover", "blue_green"] | None = None
    drain_timeout_seconds: int | None = None
    max_in_flight: int | None = None


@final
class Observability(_Group, frozen=True):
    """``observability`` (kept as free JSON per sub-group)."""

    metrics: dict[str, Any] | None = None
    tracing: dict[str, Any] | None = None
    watermark: dict[str, Any] | None = None


@final
class Recording(_Group, frozen=True):
    """``recording``."""

    mode: Literal["off", "metadata", "payload"] | None = None
    sample_rate: int | None = None
    retention_seconds: int | None = None
    redact_fields: tuple[str, ...] | None = None


@final
class StreamingSettings(_Group, frozen=True):
    """``TransportStreamingSettings``; None everywhere means "not set at this level"."""

    backpressure: Backpressure | None = None
    flow_control: FlowControlSettings | None = None
    delivery: Delivery | None = None
    routing: Routing | None = None
    lanes: tuple[Lane, ...] | None = None
    fan_in: FanIn | None = None
    partitioning: Partitioning | None = None
    lifecycle: Lifecycle | None = None
    observability: Observability | None = None
    recording: Recording | None = None

    def __post_init__(self) -> None:
        buffer = self.backpressure.buffer if self.backpressure else None
        if buffer is not None:
            for name in ("max_messages", "max_bytes", "max_age_seconds"):
                value = getattr(buffer, name)
                if value is not None and value < 0:
                    raise ValueError(f"backpressure.buffer.{name} must be >= 0, got {value}")
        routing = self.routing
        if (
            routing is not None
            and routing.max_downstreams is not None
            and routing.max_downstreams < 1
        ):
            raise ValueError("routing.maxDownstreams must be >= 1")


G = TypeVar("G", bound=_Group)


def _merge(base: G, override: G) -> G:
    changes: dict[str, Any] = {}
    for name in base.__struct_fields__:
        mine, theirs = getattr(base, name), getattr(override, name)
        if theirs is None:
            continue
        if isinstance(mine, _Group) and isinstance(theirs, _Group):
            changes[name] = _merge(mine, theirs)
        else:
            changes[name] = theirs
    return msgspec.structs.replace(base, **changes)


def merge_settings(*levels: StreamingSettings | None) -> StreamingSettings:
    """Merge levels (least specific first): a field set at a later level wins, recursively."""
    merged = StreamingSettings()
    for level in levels:
        if level is not None:
            merged = _merge(merged, level)
    return merged


@final
class ResolvedBuffer(msgspec.Struct, frozen=True, kw_only=True):
    """The buffer applied to an edge: ``block`` unless a drop policy is declared."""

    max_messages: int = DEFAULT_MAX_MESSAGES
    max_bytes: int = DEFAULT_MAX_BYTES
    max_age_seconds: float = 0.0
    drop_policy: Literal["block", "drop_oldest", "drop_newest"] = "block"


def resolve_buffer(settings: StreamingSettings) -> ResolvedBuffer:
    """The effective buffer of merged ``settings`` (defaults for what is unset; 0 = default)."""
    buffer = settings.backpressure.buffer if settings.backpressure else None
    if buffer is None:
        return ResolvedBuffer()
    return ResolvedBuffer(
        max_messages=buffer.max_messages or DEFAULT_MAX_MESSAGES,
        max_bytes=buffer.max_bytes or DEFAULT_MAX_BYTES,
        max_age_seconds=float(buffer.max_age_seconds or 0.0),
        drop_policy=buffer.drop_policy or "block",
    )
