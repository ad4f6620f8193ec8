"""The Story resource (``bubustack.io/v1alpha1``) as typed msgspec structs.

Unknown fields are ignored (newer operators must not break us); a wrong type or a broken
reference is a :class:`StoryError` whose message names the source file and the JSON path of
the bad field, e.g. ``$.spec.steps[1].needs[0]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, final

import msgspec
import yaml

from bobravoz.runtime.models import Model, ObjectMeta, ResourceError, convert_document
from bobravoz.runtime.settings import StreamingSettings
from bobravoz.runtime.template import TemplateError, compile_template, compile_value

PrimitiveType = Literal["condition", "parallel", "sleep", "stop", "wait", "executeStory", "gate"]


@final
class StoryError(ResourceError):
    """A Story that cannot be used; ``path`` is the JSON path of the offending field."""


@final
class EngramRef(Model, frozen=True):
    """``steps[].ref``: the engram a step runs."""

    name: str
    namespace: str | None = None


@final
class Step(Model, frozen=True):
    """One step of a Story."""

    name: str
    id: str | None = None
    needs: tuple[str, ...] = ()
    type: PrimitiveType | None = None
    if_: str | None = msgspec.field(default=None, name="if")
    ref: EngramRef | None = None
    with_: dict[str, Any] | None = msgspec.field(default=None, name="with")
    transport: str | None = None
    runtime: Any = None
    secrets: Any = None
    execution: Any = None

    @property
    def step_id(self) -> str:
        """The step's id: ``id`` when set, else ``name``."""
        return self.id or self.name

    @property
    def is_engram(self) -> bool:
        """True for steps that run an engram (a ``ref`` and no primitive ``type``)."""
        return self.ref is not None and self.type is None


@final
class StoryTransport(Model, frozen=True):
    """``spec.transports[]``."""

    name: str
    transport_ref: str | None = None
    description: str | None = None
    streaming: StreamingSettings | None = None
    settings: Any = None


@final
class TransportStatus(Model, frozen=True):
    """``status.transports[]``."""

    name: str
    transport_ref: str | None = None
    mode: str | None = None
    mode_reason: str | None = None


@final
class Concurrency(Model, frozen=True):
    """``spec.concurrency``: how a new packet treats the in-flight cycle of an earlier one
    from the same step (and participant, with scope ``participant``)."""

    mode: Literal["parallel", "serial", "cancelPrevious"] = "parallel"
    scope: Literal["storyrun", "participant"] = "storyrun"


@final
class StorySpec(Model, frozen=True):
    """``spec``."""

    pattern: Literal["batch", "realtime"] = "batch"
    steps: tuple[Step, ...] = ()
    transports: tuple[StoryTransport, ...] = ()
    concurrency: Concurrency | None = None


@final
class StoryStatus(Model, frozen=True):
    """``status`` (only the transports part)."""

    transports: tuple[TransportStatus, ...] = ()


@final
class Story(Model, frozen=True):
    """A Story resource."""

    metadata: ObjectMeta
    spec: StorySpec
    api_version: str = "bubustack.io/v1alpha1"
    kind: str = "Story"
    status: StoryStatus | None = None


def _check_semantics(story: Story, source: str) -> None:
    steps = story.spec.steps
    if not steps:
        raise StoryError(source, "$.spec.steps", "a Story needs at least one step")
    transports: set[str] = set()
    for index, transport in enumerate(story.spec.transports):
        if transport.name in transports:
            raise StoryError(
                source,
                f"$.spec.transports[{index}].name",
                f"transport {transport.name!r} is duplicated",
            )
        transports.add(transport.name)
    ids = {step.step_id for step in steps} | {step.name for step in steps}
    by_key: dict[str, str] = {}
    for step in steps:
        by_key[step.name] = step.step_id
        by_key[step.step_id] = step.step_id
    seen: dict[str, int] = {}
    names: dict[str, int] = {}
    for index, step in enumerate(steps):
        where = f"$.spec.steps[{index}]"
        if not step.name.strip():
            raise StoryError(source, f"{where}.name", "step name is empty")
        if step.name in names:
            raise StoryError(source, f"{where}.name", f"step name {step.name!r} is used twice")
        if step.step_id in seen:
            raise StoryError(source, where, f"step id {step.step_id!r} is used twice")
        for position, need in enumerate(step.needs):
            if need not in ids:
                raise StoryError(
                    source,
                    f"{where}.needs[{position}]",
                    f"step {step.name!r} needs {need!r}, which names no step of this Story",
                )
            if by_key[need] == step.step_id:
                raise StoryError(
                    source, f"{where}.needs[{position}]", f"step {step.name!r} needs itself"
                )
        if step.transport is not None and step.transport not in transports:
            raise StoryError(
                source,
                f"{where}.transport",
                f"step {step.name!r} uses transport {step.transport!r}, not declared in "
                "spec.transports",
            )
        if story.spec.pattern == "realtime" and step.type in {"wait", "gate"}:
            raise StoryError(
                source,
                f"{where}.type",
                f"step {step.name!r}: type {step.type} is only supported for batch stories",
            )
        if step.ref is None and step.type is None:
            raise StoryError(source, where, f"step {step.name!r} has neither ref nor type")
        seen[step.step_id] = index
        names[step.name] = index
    cycle = find_cycle(story)
    if cycle:
        first = next(i for i, s in enumerate(steps) if s.step_id == cycle[0])
        raise StoryError(
            source,
            f"$.spec.steps[{first}].needs",
            "the steps' needs form a cycle: " + " -> ".join(cycle),
        )


def upstream_steps(story: Story) -> dict[str, tuple[str, ...]]:
    """Each step id's upstream step ids: its ``needs`` (names or ids), or, when ``needs`` is
    empty, every step declared before it (the Go hub's rule, in list order)."""
    steps = story.spec.steps
    by_key: dict[str, str] = {}
    for step in steps:
        by_key[step.name] = step.step_id
        by_key[step.step_id] = step.step_id
    upstream: dict[str, tuple[str, ...]] = {}
    for index, step in enumerate(steps):
        if step.needs:
            upstream[step.step_id] = tuple(dict.fromkeys(by_key.get(n, n) for n in step.needs))
        else:
            upstream[step.step_id] = tuple(s.step_id for s in steps[:index])
    return upstream


def find_cycle(story: Story) -> tuple[str, ...]:
    """A cycle of ``needs`` as step ids, first step repeated at the end (``a -> b -> a``);
    empty when the graph is acyclic. Iterative: a long chain cannot exhaust the stack."""
    upstream = upstream_steps(story)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in upstream:
        if state.get(start):
            continue
        path: list[str] = [start]
        iterators = [iter(upstream[start])]
        state[start] = 1
        while iterators:
            following = next(iterators[-1], None)
            if following is None:
                state[path.pop()] = 2
                iterators.pop()
                continue
            mark = state.get(following, 0)
            if mark == 1:
                loop = path[path.index(following) :]
                # needs point upstream: print the cycle in the data's direction
                ordered = list(reversed([*loop, following]))
                return tuple(ordered)
            if mark == 0 and following in upstream:
                state[following] = 1
                path.append(following)
                iterators.append(iter(upstream[following]))
    return ()


def compile_story_templates(story: Story, source: str) -> None:
    """Compile every template of ``story`` once (``if``, ``runtime``, ``with``, rule
    ``when``); a template that does not parse is a StoryError naming the step, line and
    column."""
    for index, step in enumerate(story.spec.steps):
        where = f"$.spec.steps[{index}]"
        try:
            if step.if_:
                compile_template(step.if_, name=f"{step.name}.if")
            if step.runtime not in (None, "", {}, []):
                compile_value(step.runtime, name=f"{step.name}.runtime")
            if step.with_:
                compile_value(step.with_, name=f"{step.name}.with")
        except TemplateError as error:
            raise StoryError(source, where, f"step {step.name!r}: {error}") from None
    for index, transport in enumerate(story.spec.transports):
        routing = transport.streaming.routing if transport.streaming else None
        for position, rule in enumerate((routing.rules or ()) if routing else ()):
            if not rule.when:
                continue
            try:
                compile_template(rule.when, name=f"rule {rule.name or position}.when")
            except TemplateError as error:
                raise StoryError(
                    source,
                    f"$.spec.transports[{index}].streaming.routing.rules[{position}].when",
                    f"transport {transport.name!r}: {error}",
                ) from None


def parse_story(text: str | bytes, *, source: str = "<story>") -> Story:
    """Parse and check a Story from YAML (or JSON) text; raise StoryError naming the field."""
    try:
        document = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as error:  # RecursionError: nested too deep
        raise StoryError(source, "$", f"not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise StoryError(source, "$", "a Story must be a mapping")
    story = convert_document(document, Story, source=source, error=StoryError)
    _check_semantics(story, source)
    compile_story_templates(story, source)
    return story


def load_story(path: str | Path) -> Story:
    """Read and parse the Story file at ``path``."""
    location = Path(path)
    try:
        text = location.read_bytes()  # YAML decodes it: not UTF-8 is a StoryError
    except OSError as error:
        raise StoryError(str(location), "$", f"cannot read: {error.strerror}") from None
    return parse_story(text, source=str(location))
