"""Unit: the Process handshake's header checks, their order and their status codes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bobravoz.runtime.handshake import BindingIdentity, HandshakeError, check_handshake
from bobravoz.runtime.status import StatusCode

GOOD = BindingIdentity(storyrun="run", namespace="ns", step="stt", generation=3)


def test_good_headers_give_the_identity() -> None:
    identity = check_handshake(GOOD.headers())
    assert identity == BindingIdentity("run", "ns", "stt", 3, "none")
    assert identity.key == "ns/run/stt"


def test_protocol_is_checked_before_the_identity_headers() -> None:
    with pytest.raises(HandshakeError) as caught:
        check_handshake({"storyrun-name": "x"})
    assert caught.value.code == StatusCode.FAILED_PRECONDITION
    assert "bubu-transport-protocol" in caught.value.message


@pytest.mark.parametrize("header", ["storyrun-name", "storyrun-namespace", "current-step-id"])
def test_each_identity_header_is_required_and_named(header: str) -> None:
    headers = {**GOOD.headers(), header: "  "}
    with pytest.raises(HandshakeError) as caught:
        check_handshake(headers)
    assert caught.value.code == StatusCode.INVALID_ARGUMENT
    assert header in caught.value.message


@pytest.mark.parametrize("value", ["0", "-1", "abc", "2147483648", "", "1.5"])
def test_generation_must_be_a_positive_int32(value: str) -> None:
    with pytest.raises(HandshakeError) as caught:
        check_handshake({**GOOD.headers(), "connector-generation": value})
    assert caught.value.code == StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("given_value", "observed"),
    [("required", "required"), ("NONE", "none"), ("maybe", "invalid"), ("", "missing")],
)
def test_capabilities_are_observed_never_refused(given_value: str, observed: str) -> None:
    identity = check_handshake({**GOOD.headers(), "startup.capabilities": given_value})
    assert identity.capabilities == observed


@given(st.dictionaries(st.text(max_size=30), st.text(max_size=30), max_size=8))
def test_arbitrary_headers_either_pass_or_raise_handshake_error(headers: dict[str, str]) -> None:
    outcome: StatusCode | BindingIdentity
    try:
        outcome = check_handshake(headers)
    except HandshakeError as error:
        outcome = error.code
    assert isinstance(outcome, BindingIdentity) or outcome in {
        StatusCode.FAILED_PRECONDITION,
        StatusCode.INVALID_ARGUMENT,
    }
