"""Honest packet accounting from ``/metrics``: declared drops apart from every other loss.

The metric contract of hubs and connectors:

- ``bobravoz_packets_dropped_total{reason}`` counts only drops a declared drop policy asked
  for (reasons ``drop_oldest``, ``drop_newest``);
- ``bobravoz_packets_lost_total{reason}`` counts every other packet the transport knows it
  could not deliver (``oversize``, ``stream_broken``, ``link_broken``, ``shutdown``, ...);
- ``bobravoz_packets_rejected_total{reason}`` counts packets refused at the boundary for
  breaking the wire contract (reported to their sender: not loss);
- ``bobravoz_packets_filtered_total{step,reason}`` counts packets a Story primitive decided not
  to deliver to a step (``if_false``, ``rule_denied``, ``not_allowed``, ``stop``,
  ``cancelled``, ``joined``): the Story's own choice, not loss;
- ``bobravoz_template_errors_total{reason}`` counts ``if``/``runtime``/rule evaluations that
  failed (that packet was not delivered to that step), shown apart.

Older processes count some losses (``stream_broken``, ``oversize``, ...) in the dropped family
and expose no lost family at all. So a dropped sample counts as a declared drop only when its
reason is a policy's; any other reason is loss, and a missing family is zero. Both
``bobravoz up`` and ``make loadtest`` account with this module, so neither can mistake loss
for policy.

A Story with primitives (``if``, ``runtime``, routing rules, fan-in, ``sleep``/``stop`` steps,
``spec.concurrency``) decides per packet what reaches which step, so "every packet sent, once
per path to a sink" is no longer what should arrive: :func:`story_has_primitives` tells such a
Story apart, and its verdict is the transport's own count (:func:`story_lines`).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, final

from prometheus_client.parser import text_string_to_metric_families

from bobravoz.runtime.channel import POLICY_REASONS
from bobravoz.runtime.story import Story

#: One sample of an exposition: (sample name, labels, value).
Sample = tuple[str, Mapping[str, str], float]

DROPPED_SAMPLE: Final = "bobravoz_packets_dropped_total"
LOST_SAMPLE: Final = "bobravoz_packets_lost_total"
REJECTED_SAMPLE: Final = "bobravoz_packets_rejected_total"
FILTERED_SAMPLE: Final = "bobravoz_packets_filtered_total"
TEMPLATE_ERRORS_SAMPLE: Final = "bobravoz_template_errors_total"
#: The reasons a declared drop policy drops for; every other reason is loss.
DECLARED_DROP_REASONS: Final = POLICY_REASONS


@final
@dataclass
class TransportLoss:
    """Packets the transport says it did not deliver, by reason, summed over scrapes."""

    #: Dropped because a declared policy (``drop_oldest``/``drop_newest``) asked for it.
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Every other packet the transport counted as not delivered.
    lost: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Refused at the boundary for breaking the wire contract (the sender was told).
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Not delivered to a step because a Story primitive said so (by reason): not loss.
    filtered: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Template evaluations that failed, by reason (the packet was not delivered there).
    template_errors: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def declared_drops(self) -> int:
        """Packets dropped by declared policy."""
        return sum(self.dropped.values())

    @property
    def lost_counted(self) -> int:
        """Packets the transport counted as lost (not by any declared policy)."""
        return sum(self.lost.values())

    @property
    def rejected_total(self) -> int:
        """Packets rejected for breaking the wire contract."""
        return sum(self.rejected.values())

    @property
    def filtered_total(self) -> int:
        """Packets a Story primitive decided not to deliver."""
        return sum(self.filtered.values())

    def add(self, other: TransportLoss) -> None:
        """Add ``other``'s counts (another process's scrape) to these."""
        self.dropped.update(other.dropped)
        self.lost.update(other.lost)
        self.rejected.update(other.rejected)
        self.filtered.update(other.filtered)
        self.template_errors.update(other.template_errors)


def transport_loss(samples: Iterable[Sample]) -> TransportLoss:
    """Classify ``(sample name, labels, value)`` triples by the metric contract (module doc)."""
    found = TransportLoss()
    for name, labels, value in samples:
        reason = labels.get("reason", "")
        count = round(value)
        if name == DROPPED_SAMPLE:
            (found.dropped if reason in DECLARED_DROP_REASONS else found.lost)[reason] += count
        elif name == LOST_SAMPLE:
            found.lost[reason] += count
        elif name == REJECTED_SAMPLE:
            found.rejected[reason] += count
        elif name == FILTERED_SAMPLE:
            found.filtered[reason] += count
        elif name == TEMPLATE_ERRORS_SAMPLE:
            found.template_errors[reason] += count
    return found


def exposition_samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition as ``(name, labels, value)``."""
    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def transport_loss_from_text(text: str) -> TransportLoss:
    """:func:`transport_loss` of a ``/metrics`` text exposition."""
    return transport_loss(exposition_samples(text))


def undeclared_loss(expected: int, delivered: int, declared_drops: int) -> int:
    """Packets neither delivered nor dropped by a declared policy: expected - delivered -
    declared drops (never less than 0). Losses the transport counted are *not* subtracted:
    counting a loss does not make it a policy."""
    return max(0, expected - delivered - declared_drops)


def format_reasons(counts: Mapping[str, int]) -> str:
    """``reason=count`` pairs, largest first (ties by name), for counts above 0."""
    ordered = sorted(((r, c) for r, c in counts.items() if c), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{reason or 'unknown'}={count}" for reason, count in ordered)


@final
@dataclass(frozen=True)
class Accounting:
    """Where a run's packets went: ``expected`` deliveries (every packet sent, once per path
    to a sink), ``delivered``, and what the transport's processes counted."""

    expected: int
    delivered: int
    loss: TransportLoss

    @property
    def dropped(self) -> int:
        """Packets dropped by a declared policy."""
        return self.loss.declared_drops

    @property
    def lost(self) -> int:
        """Packets no declared policy dropped and no sink received (:func:`undeclared_loss`)."""
        return undeclared_loss(self.expected, self.delivered, self.dropped)

    def lines(self, width: int = 0, *, counted_lost: int | None = None) -> list[str]:
        """Summary lines, labels padded to ``width``: declared drops, rejections, the loss, and
        (when any) the losses the transport counted, by reason. With ``counted_lost`` (a run
        whose expected and delivered are partial) the loss line is that count instead."""
        lost = (
            f"{self.lost} (expected - delivered - declared drops)"
            if counted_lost is None
            else f"{counted_lost} (counted by the transport and the SDKs)"
        )
        lines = [
            f"{'dropped':<{width}} {self.dropped} (by declared policy)",
            f"{'rejected':<{width}} {self.loss.rejected_total} (broke the wire contract)",
            f"{'lost':<{width}} {lost}",
        ]
        if self.loss.lost_counted:
            lines.append(
                f"  counted by the transport: {self.loss.lost_counted} "
                f"({format_reasons(self.loss.lost)})"
            )
        if self.loss.filtered_total:
            lines.insert(0, filtered_line(self.loss, width))
        return lines


def filtered_line(loss: TransportLoss, width: int = 0) -> str:
    """``filtered N by the Story (reason=count, ...)``, the label padded to ``width``."""
    reasons = format_reasons(loss.filtered)
    return f"{'filtered':<{width}} {loss.filtered_total} by the Story" + (
        f" ({reasons})" if reasons else ""
    )


def story_lines(loss: TransportLoss, width: int = 0) -> list[str]:
    """Summary lines for a Story with primitives, labels padded to ``width``: what the Story
    filtered, declared drops, rejections, and the loss, which is what the transport counted
    in the lost family (no expected count exists to subtract from)."""
    lines = [
        filtered_line(loss, width),
        f"{'dropped':<{width}} {loss.declared_drops} (by declared policy)",
        f"{'rejected':<{width}} {loss.rejected_total} (broke the wire contract)",
        f"{'lost':<{width}} {loss.lost_counted} (counted by the transport)",
    ]
    if loss.lost_counted:
        lines.append(f"  by reason: {format_reasons(loss.lost)}")
    errors = sum(loss.template_errors.values())
    if errors:
        lines.insert(
            1,
            f"{'templates':<{width}} {errors} evaluations failed, those packets not delivered "
            f"({format_reasons(loss.template_errors)})",
        )
    return lines


#: Step ``type``s that change what reaches a step (``condition`` and ``parallel`` pass
#: packets through unchanged: a path through them is counted like any other).
PRIMITIVE_STEP_TYPES: Final = frozenset({"sleep", "stop", "executeStory"})


def story_has_primitives(story: Story) -> bool:
    """Whether the hub decides per packet what reaches which step: a step with ``if`` or
    ``runtime`` or a primitive ``type``, a transport with routing rules or ``fanIn``, or a
    ``spec.concurrency`` other than parallel."""
    for step in story.spec.steps:
        if (step.if_ or "").strip() or step.runtime not in (None, "", {}, []):
            return True
        if step.type in PRIMITIVE_STEP_TYPES:
            return True
    for transport in story.spec.transports:
        streaming = transport.streaming
        if streaming is None:
            continue
        if streaming.fan_in is not None or (streaming.routing and streaming.routing.rules):
            return True
    concurrency = getattr(story.spec, "concurrency", None)
    if isinstance(concurrency, Mapping):
        mode = concurrency.get("mode")
    else:
        mode = getattr(concurrency, "mode", None)
    return mode not in (None, "", "parallel")
