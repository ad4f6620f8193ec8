"""What ``make fuzz`` found, one test per crash, with the (minimised) input that crashed.

Each was an exception a parser does not promise (or a cross-check the harness got wrong,
last test); the fuzz targets hold them to their promise from now on.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import fuzz_targets
import pytest

from bobravoz.controllers.webhook import Lookups, review
from bobravoz.protocol.packets import is_heartbeat, read_metadata
from bobravoz.protocol.validation import validate_packet
from bobravoz.protocol.wire import (
    PacketLayout,
    convert_layout,
    encode_len_field,
    encode_string_field,
)
from bobravoz.runtime.binding_envelope import BindingError, parse_binding
from bobravoz.runtime.endpoints import parse_endpoint
from bobravoz.runtime.envconfig import ConfigError, EnvReader, parse_duration
from bobravoz.runtime.models import ResourceError
from bobravoz.runtime.resources import load_resources
from bobravoz.runtime.story import StoryError, load_story, parse_story
from bobravoz.sdk.engram import load_settings

STORY = b"kind: Story\nmetadata: {name: s}\nspec:\n  steps:\n  - {name: a, ref: {name: e}}\n"


def binding_text(**binding: str) -> str:
    fields = {"endpoint": "127.0.0.1:50051", "protocolVersion": "1.0.0", **binding}
    return json.dumps({"name": "b", "namespace": "demo", "binding": fields}, ensure_ascii=False)


def test_a_story_file_that_is_not_utf8_is_a_story_error(tmp_path: Path) -> None:
    """Was: UnicodeDecodeError from ``load_story`` (``read_text``) on a byte that is not UTF-8."""
    path = tmp_path / "story.yaml"
    path.write_bytes(STORY + b"# caf\xe9\n")
    with pytest.raises(StoryError, match=r"story\.yaml: \$: not valid YAML"):
        load_story(path)
    path.write_bytes(STORY)
    assert load_story(path).spec.steps[0].name == "a"


def test_a_resource_file_that_is_not_utf8_is_a_resource_error(tmp_path: Path) -> None:
    """Was: UnicodeDecodeError from ``load_resources`` (``read_text``)."""
    path = tmp_path / "resources.yaml"
    path.write_bytes(b"---\n" + STORY + b"---\n# \xad\n")
    with pytest.raises(ResourceError, match="cannot read"):
        load_resources(path)
    path.write_bytes(b"---\n" + STORY)
    assert [resource.kind for resource in load_resources(path)] == ["Story"]


def test_a_binding_payload_that_is_not_ascii_is_a_binding_error() -> None:
    """Was: ValueError from ``base64.b64decode`` (non-ASCII text is not binascii.Error), out of
    ``parse_binding`` and out of the webhook's ``review``, which promises never to raise."""
    with pytest.raises(BindingError, match="payload is not valid base64"):
        parse_binding(binding_text(payload="eyJlbnYiOiB7fX0ʵ"))
    assert parse_binding(binding_text(payload="eyJlbnYiOiB7fX0=")).settings() == {"env": {}}
    pod = {
        "metadata": {
            "namespace": "demo",
            "labels": {"bubustack.io/engram": "openai-stt"},
            "annotations": {"transport.bubustack.io/binding": binding_text(payload="ʵ")},
        },
        "spec": {"containers": [{"name": "engram", "image": "e:1"}]},
    }
    body = json.dumps({"request": {"uid": "u", "operation": "CREATE", "object": pod}}).encode()
    reply = review(body, fuzz_targets.WEBHOOK_CONFIG, fuzz_targets.WEBHOOK_LOOKUPS)
    assert reply.status == 200
    assert reply.body["response"]["allowed"] is False
    assert "base64" in reply.body["response"]["status"]["message"]


def test_a_binding_with_bytes_that_are_not_utf8_is_a_config_error() -> None:
    """Was: UnicodeEncodeError from ``parse_binding`` for an environment value holding bytes
    that are not UTF-8 (``os.environ`` keeps them as surrogate escapes)."""
    raw = binding_text().encode().replace(b'"b"', b'"b\xd9"')
    value = raw.decode("utf-8", "surrogateescape")
    with pytest.raises(BindingError, match="not valid UTF-8"):
        parse_binding(value)
    with pytest.raises(ConfigError, match="BUBU_TRANSPORT_BINDING"):
        load_settings({"BUBU_TRANSPORT_BINDING": value})


@pytest.mark.parametrize("text", ["nan", "-nan", "NaN", " nan "])
def test_a_duration_that_is_not_a_number_is_refused(text: str) -> None:
    """Was: ``parse_duration("-nan")`` returned NaN, which trio's timeouts refuse later
    (``BUBU_GRPC_MESSAGE_TIMEOUT=nan`` broke the first Control stream, not the start)."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
    with pytest.raises(ConfigError, match="BUBU_GRPC_MESSAGE_TIMEOUT"):
        EnvReader({"BUBU_GRPC_MESSAGE_TIMEOUT": text}).duration("BUBU_GRPC_MESSAGE_TIMEOUT", 1.0)
    assert parse_duration("0") == 0.0
    assert parse_duration("1m30s") == 90.0


def test_a_misnumbered_field_is_malformed_in_either_layout() -> None:
    """A harness false positive: a known field number with a non-LEN wire type keeps its
    number through ``convert_layout`` (only LEN tags are renumbered), so the violation names
    another field; the convert_layout target compares reasons, not field names."""
    data = bytes.fromhex(
        "221e0a01741204677270631a036875622a0e0a0c677270632d64656661756c7431280130033804400c"
    )
    before = validate_packet(data, PacketLayout.DATA_PACKET)
    converted = convert_layout(data, PacketLayout.DATA_PACKET, PacketLayout.DATA_REQUEST)
    after = validate_packet(converted, PacketLayout.DATA_REQUEST)
    assert before is not None
    assert after is not None
    assert (before.field, before.reason) == ("video", "malformed")
    assert (after.field, after.reason) == ("inputs", "malformed")
    assert fuzz_targets.check_convert_layout(data) is True


#: Nesting deeper than Python's recursion limit: ``json`` and PyYAML raise RecursionError.
DEEP_JSON = "[" * 5000
DEEP_YAML = b"spec: " + b"[" * 1000


def test_a_review_nested_too_deep_is_a_400() -> None:
    """Was: RecursionError out of ``review`` (and out of the webhook's connection handler,
    which then ended ``serve_webhook``)."""
    for body in (DEEP_JSON.encode(), b'{"request": ' + DEEP_JSON.encode()):
        reply = review(body, fuzz_targets.WEBHOOK_CONFIG, fuzz_targets.WEBHOOK_LOOKUPS)
        assert reply.status == 400
        assert "malformed AdmissionReview" in reply.body["error"]


def test_deep_nesting_is_the_parsers_own_error(tmp_path: Path) -> None:
    """Was: RecursionError from the Story and resource loaders, the binding envelope, its
    payload settings and ``BUBU_STEP_CONFIG``."""
    with pytest.raises(StoryError, match="not valid YAML"):
        parse_story(DEEP_YAML)
    path = tmp_path / "deep.yaml"
    path.write_bytes(DEEP_YAML)
    with pytest.raises(ResourceError, match="cannot read"):
        load_resources(path)
    with pytest.raises(BindingError, match="not valid JSON"):
        parse_binding('{"name": "b", "binding": ' + DEEP_JSON)
    payload = base64.b64encode(DEEP_JSON.encode()).decode()
    with pytest.raises(BindingError, match="payload is not JSON"):
        parse_binding(binding_text(payload=payload)).settings()
    with pytest.raises(ConfigError, match="BUBU_STEP_CONFIG is not JSON"):
        load_settings({"BUBU_TRANSPORT_BINDING": binding_text(), "BUBU_STEP_CONFIG": DEEP_JSON})


def admission(pod: object, namespace: object = "demo") -> bytes:
    request = {"uid": "u", "operation": "CREATE", "namespace": namespace, "object": pod}
    return json.dumps({"request": request}).encode()


ENGRAM_POD = {
    "metadata": {"namespace": "demo", "labels": {"bubustack.io/engram": "bound"}},
    "spec": {"containers": [{"name": "engram", "image": "e:1"}]},
}


def with_field(path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    pod = copy.deepcopy(ENGRAM_POD)
    at: Any = pod
    for key in path[:-1]:
        at = at[key]
    at[path[-1]] = value
    return pod


@pytest.mark.parametrize(
    ("pod", "namespace"),
    [
        (with_field(("metadata",), ["x"]), "demo"),
        (with_field(("metadata", "labels"), ["bubustack.io/engram"]), "demo"),
        (with_field(("metadata", "labels", "bubustack.io/engram"), {"a": 1}), "demo"),
        (with_field(("metadata", "namespace"), None), {"kind": "Pod"}),
        (with_field(("metadata", "annotations"), {"transport.bubustack.io/binding": 1}), "demo"),
        (with_field(("spec",), "x"), "demo"),
        (with_field(("spec", "containers"), [1]), "demo"),
        (with_field(("spec", "containers", 0, "env"), [{"name": [], "value": "x"}]), "demo"),
        (with_field(("spec", "containers", 0, "securityContext"), True), "demo"),
    ],
    ids=[
        "metadata-list",
        "labels-list",
        "engram-label-object",
        "namespace-object",
        "binding-annotation-number",
        "spec-string",
        "container-number",
        "env-name-list",
        "security-context-bool",
    ],
)
def test_a_pod_field_of_the_wrong_type_is_a_400(pod: dict[str, Any], namespace: object) -> None:
    """Was: AttributeError/TypeError out of ``review`` (``needs_injection``,
    ``connector_patch``), or a non-string namespace handed to the cluster lookups."""
    reply = review(admission(pod, namespace), fuzz_targets.WEBHOOK_CONFIG, LOOKUPS_OF_STRINGS)
    assert reply.status == 400, reply.body
    assert reply.body["error"].startswith("malformed Pod: ")
    assert (
        review(admission(ENGRAM_POD), fuzz_targets.WEBHOOK_CONFIG, LOOKUPS_OF_STRINGS).status == 200
    )


def _annotations(namespace: str, name: str) -> dict[str, str]:
    """The fuzz lookups, insisting on the types ``Lookups`` promises its callables."""
    assert isinstance(namespace, str)
    assert isinstance(name, str)
    return fuzz_targets.WEBHOOK_LOOKUPS.engram_annotations(namespace, name)  # type: ignore[return-value]


LOOKUPS_OF_STRINGS = Lookups(
    engram_annotations=_annotations, binding=fuzz_targets.WEBHOOK_LOOKUPS.binding
)


def test_an_unknown_field_in_a_metadata_entry_is_skipped_by_the_general_tools() -> None:
    """Was: UnicodeDecodeError from ``read_metadata``/``is_heartbeat`` (the hub's general
    path) for a packet validation accepts: a metadata entry with an unknown field (skipped by
    protobuf parsers, and by validation) holding bytes that are not UTF-8."""
    entry = encode_string_field(1, "bubu-heartbeat") + encode_len_field(5, b"\x32\x18\x6a\xf0")
    packet = encode_len_field(1, entry) + encode_len_field(1, encode_string_field(1, "k"))
    assert validate_packet(packet, PacketLayout.DATA_PACKET) is None
    assert read_metadata(packet, PacketLayout.DATA_PACKET) == {"bubu-heartbeat": "", "k": ""}
    assert is_heartbeat(packet, PacketLayout.DATA_PACKET) is False
    assert fuzz_targets.check_wire(packet) is True


@pytest.mark.parametrize("text", ["[\t:2", "[ ]:2", "[ x]:2", "[::1 ]:2", "x] ]:2", "a b:2"])
def test_an_endpoint_host_with_whitespace_or_brackets_is_refused(text: str) -> None:
    """Was: ``parse_endpoint("[\\t:2")`` kept the host ``"\\t"``, whose text ``"\\t:2"``
    parses back to 127.0.0.1:2 (a host never holds whitespace or brackets)."""
    with pytest.raises(ValueError, match="holds whitespace or brackets"):
        parse_endpoint(text)
    for good in ("[::1]:2", "[fe80::1%eth0]:2", " x:2 ", ":2", "2", "unix:///a b"):
        endpoint = parse_endpoint(good)
        assert parse_endpoint(str(endpoint)) == endpoint
