"""The fuzz targets: every decoder and parser that reads bytes or text from outside.

Each :class:`Target` checks one input and says what counts as a crash. A target raises
only for a crash: an exception its parser does not promise to raise on bad input (each
target's ``crash`` text says which ones it does promise), or a broken cross-check
(:class:`OracleError`: the compiled and pure-Python wire modules disagree, the one-pass scanner
answers differently from the general tools, a packet validation accepted fails to parse with
protoc's classes, ...). It returns whether the parser accepted the input (True) or rejected
it the documented way (False).

Inputs are bytes; the text parsers read them as UTF-8 with ``surrogateescape`` (the way
``os.environ`` decodes), and environments drop NUL bytes (no environment can carry one).
Imported by the engines (:mod:`fuzz_engines`) after atheris starts instrumenting
``bobravoz``, so nothing of ``bobravoz`` is imported before this module.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import yaml

from bobravoz.connector.config import load_config
from bobravoz.controllers.injection import BINDING_ANNOTATION, InjectionConfig
from bobravoz.controllers.webhook import Lookups, review
from bobravoz.protocol import framing, scan
from bobravoz.protocol.packets import (
    Retargeter,
    has_frame,
    is_heartbeat,
    read_envelope,
    read_metadata,
    split_process_message,
    wrap_process_message,
)
from bobravoz.protocol.validation import ContractViolation, validate_flow, validate_packet
from bobravoz.protocol.wire import (
    PacketLayout,
    WireFormatError,
    convert_layout,
    decode_varint,
    encode_varint,
    iter_fields,
)
from bobravoz.runtime.binding_envelope import (
    BindingEnvelope,
    BindingError,
    BindingInfo,
    encode_binding,
    parse_binding,
)
from bobravoz.runtime.endpoints import parse_endpoint
from bobravoz.runtime.envconfig import ConfigError, EnvReader, parse_duration
from bobravoz.runtime.hub.main import hub_settings
from bobravoz.runtime.models import ResourceError, convert_document
from bobravoz.runtime.resources import load_resources
from bobravoz.runtime.settings import StreamingSettings, merge_settings, resolve_buffer
from bobravoz.runtime.story import StoryError, load_story, parse_story
from bobravoz.runtime.topology import TopologyError, compute_topology, streaming_topology
from bobravoz.sdk.engram import load_settings

#: The seed corpus: one folder per target, named as the target.
CORPUS: Final = Path(__file__).resolve().parent / "corpus"

DATA = PacketLayout.DATA_PACKET
REQUEST = PacketLayout.DATA_REQUEST
#: What the hub writes into every packet it forwards (as in tests/protocol/test_scan.py).
IDENTITY: Final = {
    "storyrun-name": "run",
    "storyrun-namespace": "ns",
    "current-step-id": "sink",
}
STREAM_ID: Final = "ns/run/sink"
SCAN_LIMIT: Final = 4096
#: The ``reason`` codes validation promises (metric labels: a new one is a contract change).
REASONS: Final = frozenset(
    {
        "malformed",
        "invalid_utf8",
        "too_long",
        "empty_key",
        "too_large",
        "out_of_range",
        "nesting_too_deep",
        "too_many",
        "envelope_rule",
        "negative",
    }
)


class OracleError(AssertionError):
    """A cross-check failed: two implementations, or two promises, disagree."""


def expect(condition: bool, message: str) -> None:
    """Raise :class:`OracleError` with ``message`` unless ``condition``."""
    if not condition:
        raise OracleError(message)


@dataclass(frozen=True, slots=True)
class Target:
    """One fuzz target: ``check(data)`` returns True when the parser accepted ``data``,
    False when it rejected it the documented way, and raises for a crash (see ``crash``)."""

    name: str
    check: Callable[[bytes], bool]
    #: What counts as a crash: the documented rejections, and the cross-checks.
    crash: str
    #: The longest input the engines generate.
    max_len: int = 4096
    #: Tokens the mutators insert (libFuzzer's ``-dict``).
    tokens: tuple[bytes, ...] = ()

    @property
    def corpus(self) -> Path:
        """The seed corpus folder of this target."""
        return CORPUS / self.name

    def seeds(self, root: Path | None = None) -> list[bytes]:
        """The seed inputs (from ``root/<name>`` instead when given), in file-name order;
        none without a folder."""
        folder = self.corpus if root is None else root / self.name
        if not folder.is_dir():
            return []
        return [path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()]


def text_of(data: bytes) -> str:
    """``data`` as text, undecodable bytes kept as surrogate escapes (as ``os.environ`` does)."""
    return data.decode("utf-8", "surrogateescape")


# --- the wire modules: validation, field walking, scanning, layout conversion, framing ---


def pure(module: ModuleType) -> ModuleType:
    """``module`` loaded from its ``.py`` source, whatever ``import`` resolves it to (the
    compiled extension when ``make`` built one; see tests/protocol/test_compiled.py)."""
    source = Path(module.__file__ or "").parent / (module.__name__.rsplit(".", 1)[1] + ".py")
    name = f"_fuzz_pure_{module.__name__.replace('.', '_')}"
    spec = importlib.util.spec_from_file_location(name, source)
    assert spec is not None
    assert spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


PURE_SCAN: Final = pure(scan)
PURE_FRAMING: Final = pure(framing)
#: Modules loaded outside the import system (atheris instruments them function by function).
PURE_MODULES: Final = (PURE_SCAN, PURE_FRAMING)

_UPB: dict[PacketLayout, Any] = {}


def _upb_classes() -> dict[PacketLayout, Any]:
    """protoc's Python (upb) message class for each packet layout, built once per process
    from the .proto files into a private descriptor pool (no clash with the tests' pb2)."""
    if _UPB:
        return _UPB
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from grpc_tools import protoc

    root = Path(scan.__file__ or "").parent / "proto"
    out = tempfile.mkdtemp(prefix="bobravoz-fuzz-")
    atexit.register(shutil.rmtree, out, True)
    descriptors = os.path.join(out, "transport.desc")
    include = Path(protoc.__file__).parent / "_proto"
    status = protoc.main(
        [
            "protoc",
            f"-I{root}",
            f"-I{include}",
            "--include_imports",
            f"--descriptor_set_out={descriptors}",
            str(root / "transport/v1/transport.proto"),
            str(root / "transport/v1/hub.proto"),
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed ({status})")
    files = descriptor_pb2.FileDescriptorSet.FromString(Path(descriptors).read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    names = {
        PacketLayout.DATA_PACKET: "DataPacket",
        PacketLayout.DATA_REQUEST: "DataRequest",
        PacketLayout.HUB_PUSH_REQUEST: "HubPushRequest",
        PacketLayout.HUB_PUSH_RESPONSE: "HubPushResponse",
    }
    for layout, name in names.items():
        descriptor = pool.FindMessageTypeByName(f"transport.v1.{name}")
        _UPB[layout] = message_factory.GetMessageClass(descriptor)
    return _UPB


def check_validate_packet(data: bytes) -> bool:
    """``validate_packet`` (every layout) and ``validate_flow`` never raise; violations carry
    a documented reason; a packet accepted parses with protoc's classes of that layout."""
    from google.protobuf.message import DecodeError

    classes = _upb_classes()
    accepted = False
    for layout in PacketLayout:
        violation = validate_packet(data, layout)
        if violation is None:
            try:
                classes[layout].FromString(data)
            except DecodeError as error:
                message = f"{layout.name} accepted, protoc's parser refuses: {error}"
                raise OracleError(message) from error
            accepted = accepted or layout is DATA
        else:
            expect(isinstance(violation, ContractViolation), f"returned {violation!r}")
            expect(violation.reason in REASONS, f"undocumented reason {violation.reason!r}")
    flow = validate_flow(data)
    expect(flow is None or flow.reason in REASONS, f"validate_flow returned {flow!r}")
    return accepted


def check_wire(data: bytes) -> bool:
    """``iter_fields``/``decode_varint``/``split_process_message`` raise only
    ``WireFormatError``, and the fields they find tile the message; the general packet tools
    (metadata, envelope, heartbeat, retarget) never raise on a packet validation accepted."""
    try:
        decoded = decode_varint(data, 0)
    except WireFormatError:
        pass
    else:
        value, after = decoded
        expect(0 < after <= 10, f"varint of {after} bytes")
        if value < 1 << 64:
            expect(decode_varint(encode_varint(value), 0)[0] == value, "varint round trip")
    try:
        fields = list(iter_fields(data))
    except WireFormatError:
        fields = None
    if fields is not None:
        position = 0
        for field in fields:
            expect(field.start == position, f"gap or overlap before {field}")
            expect(field.start < field.value_start <= field.end, f"bounds of {field}")
            expect(1 <= field.number < 1 << 29, f"number of {field}")
            position = field.end
        expect(position == len(data), "fields do not cover the message")
    try:
        split_process_message(data)
    except WireFormatError:
        expect(fields is None, "split_process_message refused a message iter_fields walked")
    if validate_packet(data, DATA) is not None:
        return fields is not None
    read_metadata(data, DATA)
    read_envelope(data, DATA)
    is_heartbeat(data, DATA)
    has_frame(data, DATA)
    retargeted = Retargeter(layout=DATA, metadata_updates=IDENTITY, stream_id=STREAM_ID)(data, 7)
    metadata = read_metadata(retargeted, DATA)
    expect(all(metadata.get(k) == v for k, v in IDENTITY.items()), "retarget lost identity")
    envelope = read_envelope(retargeted, DATA)
    expect(
        envelope is not None and envelope.stream_id == STREAM_ID and envelope.sequence == 7,
        f"retarget stamped {envelope}",
    )
    return True


def check_scan(data: bytes) -> bool:
    """``scan_process``/``scan_packet`` never raise, the compiled module answers as the pure
    one, and whenever the scanner answers, its answer is the general tools' (validation,
    heartbeat, split, stamp, retag: tests/protocol/test_scan.py's properties)."""
    stamp = scan.TargetStamp(metadata_updates=IDENTITY, stream_id=STREAM_ID)
    pure_stamp = PURE_SCAN.TargetStamp(metadata_updates=IDENTITY, stream_id=STREAM_ID)
    found = scan.scan_process(data, SCAN_LIMIT, stamp.keys)
    expect(found == PURE_SCAN.scan_process(data, SCAN_LIMIT, pure_stamp.keys), "pure differs")
    as_request = scan.scan_packet(data, 0, len(data), scan.DATA_REQUEST_LAYOUT, ())
    expect(
        as_request == PURE_SCAN.scan_packet(data, 0, len(data), scan.DATA_REQUEST_LAYOUT, ()),
        "scan_packet: pure differs",
    )
    if as_request[0] != scan.SLOW:
        expect(validate_packet(data, REQUEST) is None, "scan_packet accepted, validation not")
        expect((as_request[0] == scan.HEARTBEAT) == is_heartbeat(data, REQUEST), "heartbeat")
    kind, start, end, envelope, _ = found
    if kind == scan.SLOW:
        return False
    packet, _flow = split_process_message(data)
    if kind == scan.NO_PACKET:
        expect(packet is None, "NO_PACKET for a message with a packet")
        return True
    expect(packet == data[start:end], "packet bounds differ from split_process_message")
    assert packet is not None
    expect(len(packet) <= SCAN_LIMIT, "packet over the limit")
    expect(validate_packet(packet, DATA) is None, "scan accepted, validation not")
    heartbeat = is_heartbeat(packet, DATA)
    expect(heartbeat == (kind == scan.HEARTBEAT), "heartbeat differs")
    sequence = None if heartbeat else 9
    expected = wrap_process_message(stamp.general(packet, sequence))
    if envelope < 0:
        stamped = stamp.stamp(data, start, end, sequence or 0)
        expect(stamped == expected, "stamp differs from the general retarget")
        expect(stamped == pure_stamp.stamp(data, start, end, sequence or 0), "pure stamp")
    expect(scan.restamp(stamp, packet, sequence) == expected, "restamp differs")
    table = scan.retag_table(scan.DATA_PACKET_LAYOUT, scan.DATA_REQUEST_LAYOUT)
    expect(scan.retag(data, start, end, table) == convert_layout(packet, DATA, REQUEST), "retag")
    return True


def check_convert_layout(data: bytes) -> bool:
    """``convert_layout`` raises only ``WireFormatError``, keeps the field count, and a
    packet valid in one layout is valid in the other (invalid: for the same reason)."""
    accepted = False
    for source in PacketLayout:
        before = validate_packet(data, source)
        for target in PacketLayout:
            try:
                converted = convert_layout(data, source, target)
            except WireFormatError:
                continue
            accepted = True
            expect(
                len(list(iter_fields(converted))) == len(list(iter_fields(data))),
                f"{source.name}->{target.name} changed the field count",
            )
            after = validate_packet(converted, target)
            # Only length-delimited tags are renumbered: a known field with another wire type
            # keeps its number (and is malformed under either name), so compare reasons only.
            same = (before is None and after is None) or (
                before is not None and after is not None and before.reason == after.reason
            )
            expect(same, f"{source.name}->{target.name}: {before} became {after}")
    return accepted


def check_framing(data: bytes) -> bool:
    """``split_messages`` raises only ``ValueError`` (a compressed message) and answers as
    the pure module; messages plus rest re-frame to the input; ``declared_length`` agrees."""
    limit = data[0] * 8 if data else 0
    for bound in (framing.UNLIMITED, limit):
        try:
            found = framing.split_messages(data, bound)
        except ValueError:
            with contextlib.suppress(ValueError):
                PURE_FRAMING.split_messages(data, bound)
                raise OracleError("the pure module accepted what the compiled refused") from None
            continue
        expect(found == PURE_FRAMING.split_messages(data, bound), "pure framing differs")
        messages, rest = found
        expect(framing.frame_messages(messages) + rest == data, "messages + rest != input")
        expect(
            framing.declared_length(rest) == PURE_FRAMING.declared_length(rest), "declared_length"
        )
        if bound == framing.UNLIMITED and len(rest) >= 5:
            expect(framing.declared_length(rest) > len(rest) - 5, "a complete message was kept")
    try:
        framing.split_messages(data)
    except ValueError:
        return False
    return True


# --- Stories, resources, settings ---


@contextlib.contextmanager
def _file_holding(data: bytes) -> Iterator[Path]:
    """A temporary file holding ``data`` (the file loaders read paths)."""
    handle, name = tempfile.mkstemp(prefix="bobravoz-fuzz-", suffix=".yaml")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        yield Path(name)
    finally:
        os.unlink(name)


def check_story(data: bytes) -> bool:
    """``parse_story`` (bytes) and ``load_story`` (a file) raise only ``StoryError`` and agree;
    the topology of a parsed Story raises only ``TopologyError`` (``compute_topology`` on a
    checked Story never raises)."""
    try:
        story = parse_story(data, source="fuzz")
    except StoryError:
        story = None
    with _file_holding(data) as path:
        try:
            loaded = load_story(path)
        except StoryError:
            loaded = None
    expect(loaded == story, "load_story and parse_story disagree")
    if story is None:
        return False
    compute_topology(story)
    with contextlib.suppress(TopologyError):
        streaming_topology(story)
    return True


def check_resources(data: bytes) -> bool:
    """``load_resources`` raises only ``ResourceError`` (StoryError is one)."""
    with _file_holding(data) as path:
        try:
            resources = load_resources(path)
        except ResourceError:
            return False
    return bool(resources)


def check_streaming_settings(data: bytes) -> bool:
    """Streaming settings levels (YAML, a list of levels or one) convert raising only
    ``ResourceError``; merging and resolving the buffer never raise and give usable sizes."""
    try:
        document = yaml.safe_load(data)
    except (yaml.YAMLError, RecursionError):
        return False  # not YAML: the Story and resource loaders' problem, fuzzed there
    documents = document if isinstance(document, list) else [document]
    levels: list[StreamingSettings | None] = []
    for item in documents[:4]:
        if item is None:
            levels.append(None)
            continue
        try:
            levels.append(convert_document(item, StreamingSettings, source="fuzz"))
        except ResourceError:
            return False
    merged = merge_settings(*levels)
    buffer = resolve_buffer(merged)
    expect(buffer.max_messages >= 1 and buffer.max_bytes >= 1, f"resolved {buffer}")
    expect(buffer.drop_policy in ("block", "drop_oldest", "drop_newest"), f"resolved {buffer}")
    return True


# --- the AdmissionReview webhook ---

WEBHOOK_CONFIG: Final = InjectionConfig(image="ghcr.io/bubustack/bobravoz-connector:0.1.0")
_BINDING = BindingEnvelope(
    name="r1-transcribe-transport",
    namespace="demo",
    info=BindingInfo(
        endpoint="127.0.0.1:50051",
        transport_ref="livekit",
        driver="livekit",
        audio_codecs=("opus", "pcm16"),
    ),
)
_ENGRAMS: Final = {
    ("demo", "openai-stt"): {},
    ("demo", "text-emitter"): {},
    ("demo", "bound"): {BINDING_ANNOTATION: "r1-transcribe-transport"},
}


def _engram_annotations(namespace: str, name: str) -> dict[str, str]:
    try:
        return _ENGRAMS[(namespace, name)]
    except KeyError:
        raise LookupError(f"no Engram {namespace}/{name}") from None


def _binding(namespace: str, name: str) -> BindingEnvelope:
    if (namespace, name) != ("demo", "r1-transcribe-transport"):
        raise LookupError(f"no TransportBinding {namespace}/{name}")
    return _BINDING


WEBHOOK_LOOKUPS: Final = Lookups(engram_annotations=_engram_annotations, binding=_binding)


def check_admission_review(data: bytes) -> bool:
    """``review`` never raises (documented): 400 for a malformed review, else 200 with an
    AdmissionReview response whose patch, when there is one, is base64 JSON operations."""
    reply = review(data, WEBHOOK_CONFIG, WEBHOOK_LOOKUPS)
    expect(reply.status in (200, 400), f"status {reply.status}")
    json.dumps(reply.body)
    if reply.status == 400:
        return False
    response = reply.body["response"]
    expect(isinstance(response["uid"], str), "uid is not a string")
    expect(isinstance(response["allowed"], bool), "allowed is not a boolean")
    if "patch" in response:
        operations = json.loads(base64.b64decode(response["patch"], validate=True))
        expect(isinstance(operations, list) and bool(operations), "empty patch")
        expect(all(isinstance(op, dict) and "op" in op for op in operations), "bad operation")
    return True


# --- environments and the values in them ---


def environ_of(data: bytes) -> dict[str, str]:
    """An environment from ``data``: a JSON object (values that are not strings as JSON), or
    else ``NAME=value`` lines; NUL bytes dropped, names without ``=``."""
    text = text_of(data).replace("\0", "")
    if text.lstrip().startswith("{"):
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, dict):
            return {
                str(name).replace("=", ""): value if isinstance(value, str) else json.dumps(value)
                for name, value in document.items()
            }
    environ: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name:
            environ[name] = value
    return environ


def check_environment(data: bytes) -> bool:
    """The connector's ``load_config``, the hub's ``hub_settings`` and the SDK's
    ``load_settings`` raise only ``ConfigError`` (naming the variable) on any environment."""
    environ = environ_of(data)
    accepted = False
    for loader in (load_config, hub_settings, load_settings):
        try:
            loader(environ)
        except ConfigError:
            continue
        accepted = True
    return accepted


def check_env_values(data: bytes) -> bool:
    """One variable's value through each reader: ``parse_duration`` and ``parse_endpoint``
    raise only ``ValueError``; a duration read is a number of seconds >= 0 (not NaN); an
    endpoint's port is in range and its text parses back to it; ``EnvReader`` raises only
    ``ConfigError``."""
    value = text_of(data).replace("\0", "")
    accepted = False
    try:
        seconds = parse_duration(value)
    except ValueError:
        pass
    else:
        accepted = True
        expect(seconds >= 0, f"duration {value!r} read as {seconds}")
    for allow_zero in (False, True):
        try:
            endpoint = parse_endpoint(value, allow_port_zero=allow_zero)
        except ValueError:
            continue
        accepted = True
        if endpoint.unix_path is None:
            expect((0 if allow_zero else 1) <= endpoint.port <= 65535, f"port {endpoint.port}")
        again = parse_endpoint(str(endpoint), allow_port_zero=True)
        expect(again == endpoint, f"{value!r} -> {endpoint} -> {again}")
    env = EnvReader({"X": value})
    readers: tuple[Callable[[], object], ...] = (
        lambda: env.text("X"),
        lambda: env.integer("X", 1),
        lambda: env.duration("X", 1.0),
        lambda: env.flag("X"),
    )
    for read in readers:
        with contextlib.suppress(ConfigError):
            read()
    return accepted


def check_binding_envelope(data: bytes) -> bool:
    """``parse_binding`` raises only ``BindingError``; an envelope parsed encodes to text that
    parses back to it; its ``settings()`` raise only ``BindingError``."""
    try:
        envelope = parse_binding(text_of(data).replace("\0", ""))
    except BindingError:
        return False
    again = parse_binding(encode_binding(envelope))
    expect(again == envelope, f"{envelope} -> {again}")
    with contextlib.suppress(BindingError):
        envelope.settings()
    return True


#: What a Story template sees: every root, nested values, strings that look like numbers.
_TEMPLATE_DATA: Final = {
    "inputs": {"systemPrompt": "be brief", "n": 3, "list": [1, "a", None, {"k": True}]},
    "steps": {"transcribe": {"text": "hello", "score": 0.5}},
    "packet": {
        "type": "storyrun.ready",
        "text": "hi",
        "n": 2.0,
        "items": [1, 2, 3],
        "metadata": {"lang": "en", "participant": "ann", "count": "12"},
    },
}


def check_template(data: bytes) -> bool:
    """``compile_template`` raises only ``TemplateSyntaxError``; a compiled template's
    ``render``, ``value`` and ``condition`` raise only ``TemplateEvalError`` and keep the
    output cap and the budget (bounded work whatever the template)."""
    from bobravoz.runtime.template import (
        TemplateEvalError,
        TemplateSyntaxError,
        compile_template,
    )

    try:
        template = compile_template(text_of(data), name="fuzz")
    except TemplateSyntaxError as error:
        expect(error.line >= 1 and error.column >= 1, f"position {error.line}:{error.column}")
        return False
    for evaluate in (template.render, template.value, template.condition):
        try:
            result = evaluate(_TEMPLATE_DATA, max_output=4096, budget=5_000)
        except TemplateEvalError:
            continue
        if isinstance(result, str):
            expect(len(result) <= 4096, f"{len(result)} characters past the 4096 cap")
    return True


def check_struct(data: bytes) -> bool:
    """``decode_struct`` raises only ``WireFormatError``; what it decodes encodes back to
    bytes that decode to the same object, and the compiled ``packet_parts`` walk agrees with
    the general ``read_parts`` on every packet validation accepts."""
    from bobravoz.protocol.packets import read_parts
    from bobravoz.protocol.structs import decode_struct, encode_struct

    accepted = False
    try:
        value = decode_struct(data)
    except WireFormatError:
        pass
    else:
        accepted = True
        try:
            again = decode_struct(encode_struct(value))
        except ValueError as error:  # NaN and infinities decode but a Struct cannot hold them
            expect("finite" in str(error), f"re-encoding {value!r}: {error}")
        else:
            expect(again == value or again != again, f"{value!r} -> {again!r}")
    if validate_packet(data, PacketLayout.DATA_PACKET) is None:
        parts = read_parts(data, PacketLayout.DATA_PACKET)
        metadata, p_start, p_end, i_start, i_end, e_start, _ = scan.packet_parts(data)
        if p_start != -2:
            pairs = iter(metadata)
            expect(dict(zip(pairs, pairs, strict=True)) == parts.metadata, "metadata differs")
            expect((data[p_start:p_end] if p_start >= 0 else None) == parts.payload, "payload")
            expect((data[i_start:i_end] if i_start >= 0 else None) == parts.inputs, "inputs")
            expect((e_start >= 0) == (parts.envelope is not None), "envelope presence")
        accepted = True
    return accepted


# --- the registry ---

_PROTO_TOKENS: Final = (b"\x0a", b"\x12", b"\x1a", b"\x22", b"\x2a", b"\x32", b"\x3a", b"\x42")
_YAML_TOKENS: Final = (
    b"apiVersion: ",
    b"kind: ",
    b"metadata:",
    b"name: ",
    b"spec:",
    b"steps:",
    b"needs: ",
    b"ref: ",
    b"transport: ",
    b"transports:",
    b"streaming:",
    b"pattern: realtime",
    b"type: ",
    b"id: ",
    b"- ",
    b"&a ",
    b"*a",
    b"!!binary ",
    b"{}",
    b"[]",
    b"null",
    b".nan",
    b"\n  ",
)
_TEMPLATE_TOKENS: Final = (
    b"{{",
    b"}}",
    b"{{- ",
    b" -}}",
    b"packet.",
    b"inputs.",
    b"steps.",
    b"metadata.",
    b" | ",
    b"$x := ",
    b"if ",
    b"else ",
    b"end",
    b"range ",
    b"with ",
    b"eq ",
    b"default ",
    b"printf ",
    b"index ",
    b"toJson ",
    b"repeat ",
    b"(",
    b")",
    b'"',
)
_JSON_TOKENS: Final = (b'"', b'":', b"{", b"}", b"[", b"]", b",", b"null", b"true", b"1e999")
_ENV_TOKENS: Final = (
    b"BUBU_HUB_ENDPOINT=",
    b"BUBU_GRPC_LOCAL_ENDPOINT=",
    b"BUBU_TRANSPORT_BINDING=",
    b"BUBU_TRANSPORT_SECURITY_MODE=tls",
    b"BUBU_GRPC_MESSAGE_TIMEOUT=",
    b"BUBU_CONNECTOR_GENERATION=",
    b"BUBU_STEP_CONFIG=",
    b"BOBRAVOZ_P2P_LISTEN=",
    b"BOBRAVOZ_HUB_MAX_STREAMS=",
    b"unix://",
    b"1m30s",
    b"nan",
    b"inf",
    b"\n",
)

ALL: Final = (
    Target(
        "validate_packet",
        check_validate_packet,
        "any exception (documented: never raises); a reason outside the documented codes; "
        "a packet accepted that protoc's parser refuses",
        tokens=_PROTO_TOKENS,
    ),
    Target(
        "wire",
        check_wire,
        "an exception other than WireFormatError from the field walkers; fields that do not "
        "tile the message; any exception from the packet tools on a validated packet",
        tokens=_PROTO_TOKENS,
    ),
    Target(
        "scan",
        check_scan,
        "any exception (documented: never raises); compiled != pure; an answer that differs "
        "from the general path's",
        tokens=_PROTO_TOKENS,
    ),
    Target(
        "convert_layout",
        check_convert_layout,
        "an exception other than WireFormatError; a conversion that changes validity",
        tokens=_PROTO_TOKENS,
    ),
    Target(
        "framing",
        check_framing,
        "an exception other than ValueError (compressed); compiled != pure; split and frame "
        "not inverse",
    ),
    Target(
        "story",
        check_story,
        "an exception other than StoryError (TopologyError from the topology); parse_story "
        "and load_story disagreeing",
        max_len=8192,
        tokens=_YAML_TOKENS,
    ),
    Target(
        "resources",
        check_resources,
        "an exception other than ResourceError",
        max_len=8192,
        tokens=_YAML_TOKENS,
    ),
    Target(
        "streaming_settings",
        check_streaming_settings,
        "an exception other than ResourceError; merge/resolve raising or giving sizes < 1",
        tokens=_YAML_TOKENS,
    ),
    Target(
        "admission_review",
        check_admission_review,
        "any exception (documented: never raises); a status other than 200/400; a patch "
        "that is not base64 JSON operations",
        max_len=8192,
        tokens=_JSON_TOKENS,
    ),
    Target(
        "environment",
        check_environment,
        "an exception other than ConfigError from load_config, hub_settings or load_settings",
        tokens=_ENV_TOKENS + _JSON_TOKENS,
    ),
    Target(
        "env_values",
        check_env_values,
        "an exception other than ValueError/ConfigError; a NaN or negative duration; an "
        "endpoint that does not parse back from its text",
        max_len=256,
        tokens=_ENV_TOKENS,
    ),
    Target(
        "binding_envelope",
        check_binding_envelope,
        "an exception other than BindingError; an envelope that does not round-trip",
        tokens=_JSON_TOKENS,
    ),
    Target(
        "template",
        check_template,
        "an exception other than TemplateSyntaxError (compile) or TemplateEvalError "
        "(evaluation); output past the cap",
        max_len=2048,
        tokens=_TEMPLATE_TOKENS,
    ),
    Target(
        "struct",
        check_struct,
        "an exception other than WireFormatError; a Struct that does not round-trip; the "
        "compiled packet walk disagreeing with the general one",
        tokens=_PROTO_TOKENS,
    ),
)
BY_NAME: Final = {target.name: target for target in ALL}


def _planted_crash(data: bytes) -> bool:
    if b"CRASH" in data:
        raise ZeroDivisionError("planted crash")
    return True


#: Not in :data:`ALL`: the engines' self-test (a crash on any input holding ``CRASH``).
PLANTED: Final = Target(
    "planted_crash", _planted_crash, "any input holding CRASH", tokens=(b"CRASH",)
)


def find(name: str) -> Target:
    """The target named ``name`` (the self-test's included); KeyError naming it otherwise."""
    if name == PLANTED.name:
        return PLANTED
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no fuzz target {name!r}; known: {', '.join(BY_NAME)}") from None


__all__ = ["ALL", "BY_NAME", "PLANTED", "OracleError", "Target", "find"]
