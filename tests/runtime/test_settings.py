"""Streaming settings: typed parsing with paths, the field-by-field merge, buffer resolution."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bobravoz.runtime.settings import (
    ResolvedBuffer,
    StreamingSettings,
    merge_settings,
    resolve_buffer,
)


def settings_of(document: dict) -> StreamingSettings:
    return msgspec.convert(document, StreamingSettings)


def test_camel_case_and_unknown_fields() -> None:
    parsed = settings_of(
        {
            "flowControl": {"mode": "credits", "ackEvery": {"maxDelay": "250ms"}},
            "someFutureKey": True,
        }
    )
    assert parsed.flow_control is not None
    assert parsed.flow_control.ack_every is not None
    assert parsed.flow_control.ack_every.max_delay == "250ms"


def test_bad_enum_names_the_path() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.routing\.mode"):
        settings_of({"routing": {"mode": "sideways"}})


def test_negative_buffer_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"maxMessages|max_messages"):
        settings_of({"backpressure": {"buffer": {"maxMessages": -1}}})


def test_more_specific_level_wins_field_by_field() -> None:
    transport = settings_of(
        {
            "flowControl": {"mode": "credits", "initialCredits": {"messages": 100}},
            "delivery": {"ordering": "per_stream", "replay": {"mode": "memory"}},
            "routing": {"rules": [{"name": "a"}, {"name": "b"}]},
        }
    )
    story = settings_of(
        {
            "flowControl": {"mode": "window"},
            "delivery": {"semantics": "best_effort"},
            "routing": {"rules": [{"name": "c"}]},
        }
    )
    merged = merge_settings(transport, story)
    assert merged.flow_control is not None
    assert merged.flow_control.mode == "window"
    assert merged.flow_control.initial_credits is not None
    assert merged.flow_control.initial_credits.messages == 100
    assert merged.delivery is not None
    assert (merged.delivery.ordering, merged.delivery.semantics) == ("per_stream", "best_effort")
    assert merged.routing is not None
    assert merged.routing.rules is not None
    assert [rule.name for rule in merged.routing.rules] == ["c"]  # lists replace wholesale


def test_buffer_resolution_defaults_to_block() -> None:
    assert resolve_buffer(StreamingSettings()) == ResolvedBuffer()
    resolved = resolve_buffer(
        settings_of({"backpressure": {"buffer": {"maxMessages": 5, "dropPolicy": "drop_oldest"}}})
    )
    assert (resolved.max_messages, resolved.drop_policy) == (5, "drop_oldest")
    assert resolved.max_bytes == ResolvedBuffer().max_bytes


optional_ints = st.one_of(st.none(), st.integers(1, 10**6))


@given(optional_ints, optional_ints, optional_ints, optional_ints)
def test_merge_takes_the_last_set_value(
    a: int | None, b: int | None, c: int | None, d: int | None
) -> None:
    levels = [
        settings_of({"backpressure": {"buffer": {"maxMessages": value}}} if value else {})
        for value in (a, b, c, d)
    ]
    merged = merge_settings(*levels)
    expected = next((v for v in (d, c, b, a) if v is not None), None)
    buffer = merged.backpressure.buffer if merged.backpressure else None
    assert (buffer.max_messages if buffer else None) == expected
    assert merge_settings(merged, StreamingSettings()) == merged
