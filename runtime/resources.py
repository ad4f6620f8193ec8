"""Typed models of the BubuStack resources the transport reads and writes.

StoryRun and StepRun (``runs.bubustack.io``), Engram (``bubustack.io``), Transport and
TransportBinding (``transport.bubustack.io``), all ``v1alpha1``; the Story lives in
:mod:`bobravoz.runtime.story`. Only the fields bobravoz uses are modelled; everything else
is ignored. :func:`parse_resource` picks the model from ``kind`` and raises
:class:`~bobravoz.runtime.models.ResourceError` naming the bad field's path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, final

import msgspec
import yaml

from bobravoz.runtime.models import Model, ObjectMeta, ResourceError, convert_document
from bobravoz.runtime.settings import StreamingSettings
from bobravoz.runtime.story import Story

Direction = Literal["publish", "subscribe", "bidirectional"]
AudioCodec = Literal[
    "pcm16", "pcm24", "opus", "g711-mu", "g711-a", "g722", "aac", "mp3", "flac", "raw"
]
VideoCodec = Literal["h264", "vp8", "vp9", "av1", "raw-yuv420", "raw-rgb", "raw-bgr"]


@final
class Condition(Model, frozen=True):
    """A status condition (``metav1.Condition``)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


@final
class ObjectRef(Model, frozen=True):
    """A reference by name, optionally namespaced (StoryRef, StoryRunRef, EngramRef...)."""

    name: str
    namespace: str | None = None
    uid: str | None = None


@final
class StoryRunSpec(Model, frozen=True):
    """``StoryRun.spec``."""

    story_ref: ObjectRef
    inputs: Any = None
    cancel_requested: bool = False


@final
class StoryRunStatus(Model, frozen=True):
    """``StoryRun.status`` (what the transport reads)."""

    phase: str | None = None
    conditions: tuple[Condition, ...] = ()


@final
class StoryRun(Model, frozen=True):
    """``runs.bubustack.io/v1alpha1`` StoryRun."""

    metadata: ObjectMeta
    spec: StoryRunSpec
    status: StoryRunStatus = msgspec.field(default_factory=StoryRunStatus)
    api_version: str = "runs.bubustack.io/v1alpha1"
    kind: str = "StoryRun"


@final
class StepRunSpec(Model, frozen=True):
    """``StepRun.spec``."""

    story_run_ref: ObjectRef
    step_id: str
    engram_ref: ObjectRef | None = None
    input: Any = None


@final
class StepRun(Model, frozen=True):
    """``runs.bubustack.io/v1alpha1`` StepRun."""

    metadata: ObjectMeta
    spec: StepRunSpec
    status: dict[str, Any] = msgspec.field(default_factory=dict)
    api_version: str = "runs.bubustack.io/v1alpha1"
    kind: str = "StepRun"


@final
class EngramSpec(Model, frozen=True):
    """``Engram.spec``."""

    template_ref: ObjectRef
    mode: Literal["job", "deployment", "statefulset"] = "deployment"
    with_: Any = msgspec.field(default=None, name="with")
    transport: dict[str, Any] = msgspec.field(default_factory=dict)


@final
class Engram(Model, frozen=True):
    """``bubustack.io/v1alpha1`` Engram."""

    metadata: ObjectMeta
    spec: EngramSpec
    api_version: str = "bubustack.io/v1alpha1"
    kind: str = "Engram"


@final
class AudioCapability(Model, frozen=True):
    """``Transport.spec.supportedAudio[]``."""

    name: AudioCodec
    sample_rate_hz: int | None = None
    channels: int | None = None


@final
class VideoCapability(Model, frozen=True):
    """``Transport.spec.supportedVideo[]``."""

    name: VideoCodec
    profile: str | None = None


@final
class TransportSpec(Model, frozen=True):
    """``Transport.spec``."""

    provider: str
    driver: str
    connector_image: str | None = None
    supported_audio: tuple[AudioCapability, ...] = ()
    supported_video: tuple[VideoCapability, ...] = ()
    supported_binary: tuple[str, ...] = ()
    streaming: StreamingSettings | None = None
    config_schema: Any = None
    default_settings: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.driver.strip():
            raise ValueError("driver must not be empty")
        if not (self.supported_audio or self.supported_video or self.supported_binary):
            raise ValueError(
                "at least one of supportedAudio, supportedVideo or supportedBinary is required"
            )


@final
class Transport(Model, frozen=True):
    """``transport.bubustack.io/v1alpha1`` Transport (cluster-scoped)."""

    metadata: ObjectMeta
    spec: TransportSpec
    status: dict[str, Any] = msgspec.field(default_factory=dict)
    api_version: str = "transport.bubustack.io/v1alpha1"
    kind: str = "Transport"


@final
class AudioLane(Model, frozen=True):
    """``TransportBinding.spec.audio``."""

    direction: Direction
    codecs: tuple[str, ...] = ()


@final
class VideoLane(Model, frozen=True):
    """``TransportBinding.spec.video``."""

    direction: Direction
    codecs: tuple[str, ...] = ()
    raw: bool = False


@final
class BinaryLane(Model, frozen=True):
    """``TransportBinding.spec.binary``."""

    direction: Direction
    mime_types: tuple[str, ...] = ()


@final
class TransportBindingSpec(Model, frozen=True):
    """``TransportBinding.spec``."""

    transport_ref: str
    driver: str
    step_name: str
    engram_name: str
    story_run_ref: ObjectRef | None = None
    audio: AudioLane | None = None
    video: VideoLane | None = None
    binary: BinaryLane | None = None
    connector_endpoint: str | None = None
    raw_settings: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.audio is None and self.video is None and self.binary is None:
            raise ValueError("at least one of audio, video, or binary must be specified")


@final
class TransportBindingStatus(Model, frozen=True):
    """``TransportBinding.status``."""

    endpoint: str | None = None
    upstream_host: str | None = None
    downstream_host: str | None = None
    negotiated_audio: dict[str, Any] | None = None
    negotiated_video: dict[str, Any] | None = None
    negotiated_binary: str | None = None
    conditions: tuple[Condition, ...] = ()
    observed_generation: int | None = None


@final
class TransportBinding(Model, frozen=True):
    """``transport.bubustack.io/v1alpha1`` TransportBinding."""

    metadata: ObjectMeta
    spec: TransportBindingSpec
    status: TransportBindingStatus = msgspec.field(default_factory=TransportBindingStatus)
    api_version: str = "transport.bubustack.io/v1alpha1"
    kind: str = "TransportBinding"


Resource = Story | StoryRun | StepRun | Engram | Transport | TransportBinding
MODELS: dict[str, type[Any]] = {
    "Story": Story,
    "StoryRun": StoryRun,
    "StepRun": StepRun,
    "Engram": Engram,
    "Transport": Transport,
    "TransportBinding": TransportBinding,
}


def parse_resource(document: Any, *, source: str = "<resource>") -> Resource:
    """The typed model of one resource document, chosen by its ``kind``."""
    if not isinstance(document, dict):
        raise ResourceError(source, "$", "a resource must be a mapping")
    kind = document.get("kind")
    model = MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise ResourceError(source, "$.kind", f"unsupported kind {kind!r}")
    resource: Resource = convert_document(document, model, source=source)
    return resource


def load_resources(path: str | Path) -> list[Resource]:
    """Every resource in a (multi-document) YAML file, in order."""
    location = Path(path)
    try:
        documents = list(yaml.safe_load_all(location.read_bytes()))
    except (OSError, yaml.YAMLError, RecursionError) as error:
        raise ResourceError(str(location), "$", f"cannot read: {error}") from None
    return [
        parse_resource(document, source=f"{location}[{index}]")
        for index, document in enumerate(documents)
        if document is not None
    ]
