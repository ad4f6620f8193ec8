"""Unit: endpoint strings, Go durations, environment readers and the binding envelope."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bobravoz.runtime.binding_envelope import (
    BindingEnvelope,
    BindingError,
    BindingInfo,
    encode_binding,
    parse_binding,
)
from bobravoz.runtime.endpoints import Endpoint, parse_endpoint
from bobravoz.runtime.envconfig import ConfigError, EnvReader, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unix:///tmp/c.sock", Endpoint(unix_path="/tmp/c.sock")),
        ("6000", Endpoint(port=6000)),
        (":7000", Endpoint(port=7000)),
        ("0.0.0.0:50051", Endpoint(host="0.0.0.0", port=50051)),
        ("[::1]:9000", Endpoint(host="::1", port=9000)),
    ],
)
def test_endpoints_parse(text: str, expected: Endpoint) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize("text", ["unix://", "unix://relative", "70000", "host:abc", "", "0"])
def test_bad_endpoints_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"endpoint|port"):
        parse_endpoint(text)


@given(st.integers(min_value=1, max_value=65535))
def test_endpoint_round_trips_through_its_string(port: int) -> None:
    endpoint = Endpoint(port=port)
    assert parse_endpoint(str(endpoint)) == endpoint


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("10s", 10.0), ("1m30s", 90.0), ("2h", 7200.0), ("1.5", 1.5), ("0", 0.0)],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ten", "10x", "-1", "1s2", "ms"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=999))
def test_duration_sums_its_parts(seconds: int, millis: int) -> None:
    assert parse_duration(f"{seconds}s{millis}ms") == pytest.approx(seconds + millis / 1000)


def test_env_reader_names_the_variable() -> None:
    env = EnvReader({"A": "x", "B": "5", "C": "soon"})
    with pytest.raises(ConfigError, match="MISSING"):
        env.text("MISSING")
    with pytest.raises(ConfigError, match="A"):
        env.integer("A", 1)
    with pytest.raises(ConfigError, match=r"B=5 is outside"):
        env.integer("B", 1, maximum=4)
    with pytest.raises(ConfigError, match="C"):
        env.duration("C", 1.0)


def test_binding_round_trip() -> None:
    envelope = BindingEnvelope(
        name="binding-one",
        namespace="default",
        info=BindingInfo(
            endpoint="bubravoz:443",
            transport_ref="demo",
            driver="grpc",
            audio_codecs=("opus",),
            payload=b'{"env": {"A": 1}}',
        ),
    )
    parsed = parse_binding(encode_binding(envelope))
    assert parsed == envelope
    assert parsed.reference == "default/binding-one"
    assert parsed.settings() == {"env": {"A": 1}}


def test_binding_accepts_snake_case_keys() -> None:
    text = json.dumps(
        {
            "name": "b",
            "binding": {
                "endpoint": "1.2.3.4:5",
                "protocol_version": "1.0.0",
                "binary_types": ["a/b"],
            },
        }
    )
    assert parse_binding(text).info.binary_types == ("a/b",)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            json.dumps({"transportRef": "x", "endpoint": "e", "protocolVersion": "1.0.0"}),
            "missing name",
        ),
        (base64.b64encode(b"foo").decode(), "JSON object"),
        (json.dumps({"binding": {"endpoint": "e", "protocolVersion": "1.0.0"}}), "missing name"),
        (json.dumps({"name": "binding"}), "missing binding"),
        ("{" + "x" * (1024 * 1024), "larger than"),
        (json.dumps({"name": "b", "binding": {"endpoint": "e"}}), "missing transport protocol"),
        (
            json.dumps({"name": "b", "binding": {"endpoint": "e", "protocolVersion": "2.0.0"}}),
            "unsupported transport protocol",
        ),
        (json.dumps({"name": "b", "binding": {"protocolVersion": "1.0.0"}}), "missing endpoint"),
        (
            json.dumps(
                {
                    "name": "b",
                    "binding": {"endpoint": "e", "protocolVersion": "1.0.0", "payload": "!!"},
                }
            ),
            "base64",
        ),
    ],
)
def test_bad_bindings_are_refused(text: str, needle: str) -> None:
    with pytest.raises(BindingError, match=needle):
        parse_binding(text)
