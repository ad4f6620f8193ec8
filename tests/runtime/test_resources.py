"""Typed BubuStack resources: the reference examples parse, unknown fields are ignored, and
wrong types or broken invariants are refused with the field's path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bobravoz.runtime.models import ResourceError
from bobravoz.runtime.resources import (
    Engram,
    StepRun,
    StoryRun,
    Transport,
    TransportBinding,
    load_resources,
    parse_resource,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "resources"


def one(name: str) -> Any:
    (resource,) = load_resources(FIXTURES / name)
    return resource


def test_reference_examples_parse() -> None:
    run = one("storyrun.yaml")
    assert isinstance(run, StoryRun)
    assert run.spec.story_ref.name == "echo-rt"
    step = one("steprun.yaml")
    assert isinstance(step, StepRun)
    assert step.metadata.labels["bubustack.io/storyrun"] == "echo-rt-7f3k"
    assert step.spec.step_id == "sink"
    engram = one("engram.yaml")
    assert isinstance(engram, Engram)
    assert engram.spec.mode == "deployment"
    transport = one("transport-grpc-default.yaml")
    assert isinstance(transport, Transport)
    assert [codec.name for codec in transport.spec.supported_audio] == ["pcm16", "opus"]
    assert transport.spec.streaming is not None
    assert transport.spec.streaming.routing is not None
    assert transport.spec.streaming.routing.max_downstreams == 8
    binding = one("transportbinding.yaml")
    assert isinstance(binding, TransportBinding)
    assert binding.spec.binary is not None
    assert binding.spec.binary.mime_types == (
        "application/json",
        "application/vnd.bubu.packet+json",
    )
    assert binding.status.endpoint == "bobravoz-grpc-hub.demo.svc.cluster.local:9000"
    assert binding.status.conditions[0].status == "True"
    kinds = [
        type(r).__name__ for r in load_resources(FIXTURES / "transport-livekit-and-engrams.yaml")
    ]
    assert kinds == ["Transport", "Engram"]


def document(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((FIXTURES / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_unknown_fields_are_ignored() -> None:
    raw = document("transportbinding.yaml")
    raw["spec"]["someFutureField"] = {"x": 1}
    raw["brandNewTopLevel"] = True
    assert isinstance(parse_resource(raw), TransportBinding)


@pytest.mark.parametrize(
    ("name", "edit", "path", "words"),
    [
        (
            "transportbinding.yaml",
            lambda d: d["spec"].update(stepName=7),
            "$.spec.stepName",
            "Expected `str`",
        ),
        (
            "transportbinding.yaml",
            lambda d: d["spec"]["binary"].update(direction="sideways"),
            "$.spec.binary.direction",
            "Invalid enum value",
        ),
        (
            "transportbinding.yaml",
            lambda d: d["spec"].pop("binary"),
            "$.spec",
            "at least one of audio, video, or binary",
        ),
        (
            "transport-grpc-default.yaml",
            lambda d: [d["spec"].pop(k) for k in ("supportedAudio", "supportedBinary")],
            "$.spec",
            "at least one of supportedAudio",
        ),
        (
            "transport-grpc-default.yaml",
            lambda d: d["spec"]["supportedAudio"][0].update(name="mp4"),
            "$.spec.supportedAudio[0].name",
            "Invalid enum value",
        ),
        (
            "storyrun.yaml",
            lambda d: d["spec"].pop("storyRef"),
            "$.spec",
            "missing required field `storyRef`",
        ),
        (
            "engram.yaml",
            lambda d: d["spec"].update(mode="cron"),
            "$.spec.mode",
            "Invalid enum value",
        ),
    ],
)
def test_refusals_name_the_path(name: str, edit: Any, path: str, words: str) -> None:
    raw = document(name)
    edit(raw)
    with pytest.raises(ResourceError) as caught:
        parse_resource(raw, source=name)
    assert caught.value.path == path
    assert words in str(caught.value)


def test_unsupported_kinds_are_refused() -> None:
    with pytest.raises(ResourceError, match="unsupported kind 'Pod'"):
        parse_resource({"kind": "Pod", "metadata": {"name": "x"}})
