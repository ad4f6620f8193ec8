"""Story primitives in the hub, in process: ``if``, ``runtime``, routing rules, ``sleep`` with
``cancelPrevious``, fan-in joins, partitioning, lifecycle hooks and template errors.

Each test runs a real hub on loopback (``open_hub`` + ``serve_grpc``) and grpclib clients for
the steps; it sends packets with JSON payloads and checks what each step receives and what
the hub counted (filtered by reason, template errors, lost). Real processes on the example
Stories are in tests/integration/test_story_primitives.py.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
from test_hub_inprocess import headers, local, quiet, running_hub, until

from bobravoz.protocol.constants import PROCESS_METHOD
from bobravoz.protocol.gen.google.protobuf import Struct
from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, ProcessRequest
from bobravoz.protocol.packets import is_heartbeat, read_parts, split_process_message
from bobravoz.protocol.structs import decode_struct
from bobravoz.protocol.wire import PacketLayout
from bobravoz.runtime.grpc_bridge import (
    ClientStream,
    GrpcChannel,
    open_grpc_channel,
    open_grpc_loop,
)
from bobravoz.runtime.hub import HubSettings, TopologyRegistry
from bobravoz.runtime.status import RemoteStatusError
from bobravoz.runtime.story import parse_story
from bobravoz.runtime.topology import streaming_topology

DATA = PacketLayout.DATA_PACKET


def message(payload: Mapping[str, Any] | None = None, **metadata: str) -> bytes:
    """A ProcessRequest carrying ``payload`` (a JSON object) and ``metadata``."""
    return bytes(
        ProcessRequest(
            packet=DataPacket(
                metadata=dict(metadata),
                payload=Struct.from_dict(dict(payload)) if payload is not None else None,
                binary=BinaryFrame(payload=b"x"),
            )
        )
    )


@dataclass
class Received:
    """One data packet a step received."""

    metadata: dict[str, str]
    payload: dict[str, Any]
    inputs: dict[str, Any]
    partition: str
    sequence: int = 0


@dataclass
class Inbox:
    """What each step's stream received."""

    packets: dict[str, list[Received]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )

    def of(self, step: str) -> list[Received]:
        return self.packets[step]


async def _read(stream: ClientStream, into: list[Received]) -> None:
    try:
        while True:
            for raw in await stream.receive_batch():
                packet, _flow = split_process_message(raw)
                if packet is None or is_heartbeat(packet, DATA):
                    continue
                parts = read_parts(packet, DATA)
                into.append(
                    Received(
                        metadata=parts.metadata,
                        payload=decode_struct(parts.payload) if parts.payload else {},
                        inputs=decode_struct(parts.inputs) if parts.inputs else {},
                        partition=parts.envelope.partition if parts.envelope else "",
                        sequence=parts.envelope.sequence if parts.envelope else 0,
                    )
                )
    except (RemoteStatusError, trio.EndOfChannel):
        return


@dataclass
class Run:
    """A hub with one stream per step of a Story."""

    streams: dict[str, ClientStream]
    inbox: Inbox
    channel: GrpcChannel
    hub: Any

    def counters(self, step: str) -> Any:
        binding = self.hub.find("default", "run-1", step)
        assert binding is not None
        return binding.counters


@asynccontextmanager
async def story_run(
    text: str,
    steps: list[str],
    *,
    job_steps: tuple[str, ...] = (),
    settings: HubSettings | None = None,
) -> AsyncIterator[Run]:
    """Serve Story ``text`` (``job_steps``: its job-mode engram steps) and open a stream for
    each of ``steps`` (in order), readers on."""
    registry = TopologyRegistry(streaming_topology(parse_story(text), job_steps=job_steps))
    with trio.fail_after(20):
        async with (
            open_grpc_loop(),
            running_hub(registry, settings) as running,
            open_grpc_channel(running.endpoint) as channel,
            AsyncExitStack() as stack,
        ):
            inbox = Inbox()
            streams: dict[str, ClientStream] = {}
            for step in steps:
                streams[step] = await stack.enter_async_context(
                    channel.open_stream(PROCESS_METHOD, headers(step))
                )
            async with trio.open_nursery() as nursery:
                for step in steps:
                    nursery.start_soon(_read, streams[step], inbox.of(step))
                yield Run(streams, inbox, channel, running.hub)
                nursery.cancel_scope.cancel()


def _sink_depth(hub: Any) -> int:
    """Packets in the ``sink`` step's buffer (0 before it exists)."""
    sink = hub.find("default", "run-1", "sink")
    return sink.channel.depth if sink is not None else 0


async def late_sink_run(
    text: str, count: int, held: Callable[[Any], int], bound: int
) -> list[Received]:
    """Serve Story ``text``, send ``count`` packets from ``src`` while ``sink`` is not
    connected, check the hub then holds exactly ``bound`` packets (``held(hub)``) with the
    source waiting, connect ``sink`` and return everything it receives."""
    with trio.fail_after(20):
        async with (
            open_grpc_loop(),
            running_hub(local(text)) as running,
            open_grpc_channel(running.endpoint) as channel,
            channel.open_stream(PROCESS_METHOD, headers("src")) as src,
            trio.open_nursery() as nursery,
        ):

            async def produce() -> None:
                for index in range(count):
                    await src.send(message({"n": index}))

            nursery.start_soon(produce)
            hub = running.hub
            await until(lambda: held(hub) == bound, lambda: f"{held(hub)} held in the hub")
            await trio.testing.wait_all_tasks_blocked(0.05)
            assert held(hub) == bound, "the hub took more than the target's bound"
            got: list[Received] = []
            async with channel.open_stream(PROCESS_METHOD, headers("sink")) as sink:
                nursery.start_soon(_read, sink, got)
                await until(lambda: len(got) == count, lambda: f"{len(got)} of {count}")
                nursery.cancel_scope.cancel()
    return got


def story(steps: str, *, extra: str = "", transport: str = "") -> str:
    """A realtime Story in namespace ``default`` with ``steps`` (YAML list items)."""
    return f"""
metadata: {{name: s, namespace: default}}
spec:
  pattern: realtime
{extra}
  transports:
    - name: t
{transport or "      streaming: {}"}
  steps:
{steps}
"""


async def test_if_filters_packets_by_payload_and_counts_them() -> None:
    text = story(
        """    - {name: src, ref: {name: e}, transport: t}
    - name: sink
      ref: {name: e}
      needs: [src]
      transport: t
      if: '{{ eq (default "" packet.kind) "keep" }}'
"""
    )
    async with story_run(text, ["sink", "src"]) as run:
        for index, kind in enumerate(["keep", "skip", "keep", "other", "keep"]):
            await run.streams["src"].send(message({"kind": kind, "n": index}))
        await until(lambda: len(run.inbox.of("sink")) == 3, lambda: str(run.inbox.of("sink")))
        await until(
            lambda: run.counters("src").filtered["if_false"] == 2,
            lambda: str(run.counters("src").filtered),
        )
        assert [r.payload["n"] for r in run.inbox.of("sink")] == [0, 2, 4]
        assert sum(run.counters("src").lost.values()) == 0


async def test_runtime_renders_inputs_from_the_packet_and_earlier_steps() -> None:
    text = story(
        """    - {name: src, ref: {name: e}, transport: t}
    - name: sink
      ref: {name: e}
      needs: [src]
      transport: t
      runtime:
        prompt: 'say {{ upper packet.text }} to {{ packet.metadata.participant }}'
        count: '{{ packet.n }}'
        seen: '{{ steps.src.text }}'
"""
    )
    async with story_run(text, ["sink", "src"]) as run:
        await run.streams["src"].send(message({"text": "hello", "n": 7}, participant="ann"))
        await until(lambda: len(run.inbox.of("sink")) == 1, lambda: str(run.inbox.of("sink")))
        got = run.inbox.of("sink")[0]
        assert got.inputs == {"prompt": "say HELLO to ann", "count": 7.0, "seen": "hello"}
        assert got.payload == {"text": "hello", "n": 7.0}
        assert got.metadata["current-step-id"] == "sink"


async def test_routing_rules_allow_and_deny_per_target() -> None:
    text = story(
        """    - {name: src, ref: {name: e}, transport: t}
    - {name: translate, ref: {name: e}, needs: [src], transport: t}
    - {name: archive, ref: {name: e}, needs: [src], transport: t}
""",
        transport="""      streaming:
        routing:
          fanOut: parallel
          rules:
            - name: en
              when: '{{ eq (default "" packet.metadata.lang) "en" }}'
              action: allow
              target: {steps: [translate]}
            - name: noise
              when: '{{ eq (default "" packet.metadata.noisy) "true" }}'
              action: deny
              target: {steps: [archive]}
""",
    )
    async with story_run(text, ["translate", "archive", "src"]) as run:
        sent = [("en", "false"), ("fr", "false"), ("en", "true"), ("fr", "true")]
        for index, (lang, noisy) in enumerate(sent):
            await run.streams["src"].send(message({"n": index}, lang=lang, noisy=noisy))
        await until(
            lambda: sum(run.counters("src").filtered.values()) == 4,
            lambda: str(run.counters("src").filtered),
        )
        await until(lambda: len(run.inbox.of("archive")) == 2, lambda: str(run.inbox.packets))
        await until(lambda: len(run.inbox.of("translate")) == 2, lambda: str(run.inbox.packets))
        assert [r.payload["n"] for r in run.inbox.of("translate")] == [0, 2]
        assert [r.payload["n"] for r in run.inbox.of("archive")] == [0, 1]
        assert run.counters("src").filtered == {"not_allowed": 2, "rule_denied": 2}


async def test_sleep_delays_and_cancel_previous_cancels_a_participants_older_cycle() -> None:
    text = story(
        """    - {name: src, ref: {name: e}, transport: t}
    - {name: pause, type: sleep, needs: [src], transport: t, with: {duration: 300ms}}
    - {name: sink, ref: {name: e}, needs: [pause], transport: t}
""",
        extra="  concurrency: {mode: cancelPrevious, scope: participant}",
    )
    async with story_run(text, ["sink", "src"]) as run:
        started = trio.current_time()
        await run.streams["src"].send(message({"n": 1}, participant="ann"))
        await run.streams["src"].send(message({"n": 2}, participant="bob"))
        await run.streams["src"].send(message({"n": 3}, participant="ann"))
        await until(lambda: len(run.inbox.of("sink")) == 2, lambda: str(run.inbox.of("sink")))
        assert trio.current_time() - started >= 0.3
        assert [r.payload["n"] for r in run.inbox.of("sink")] == [2, 3]
        await until(
            lambda: run.counters("src").filtered["cancelled"] == 1,
            lambda: str(run.counters("src").filtered),
        )
        assert sum(run.counters("src").lost.values()) == 0


async def test_a_stop_step_ends_the_path() -> None:
    text = story(
        """    - {name: src, ref: {name: e}, transport: t}
    - {name: halt, type: stop, needs: [src], transport: t}
    - {name: sink, ref: {name: e}, needs: [src], transport: t}
"""
    )
    async with story_run(text, ["sink", "src"]) as run:
        await run.streams["src"].send(message({"n": 1}))
        await until(lambda: len(run.inbox.of("sink")) == 1, lambda: str(run.inbox.packets))
        await until(
            lambda: run.counters("src").filtered["stop"] == 1,
            lambda: str(run.counters("src").filtered),
        )


async def test_quorum_join_merges_parts_by_key_and_counts_expiry_and_eviction() -> None:
    text = story(
        """    - {name: a, ref: {name: e}, transport: t}
    - {name: b, ref: {name: e}, transport: t, needs: []}
    - {name: c, ref: {name: e}, transport: t, needs: [a, b]}
""",
        transport="""      streaming:
        fanIn: {mode: quorum, quorum: 2, timeoutSeconds: 1, maxEntries: 2}
""",
    )
    # the reaper (every quarter of the binding TTL) expires joins past their timeout
    async with story_run(text, ["c", "a", "b"], settings=quiet(binding_ttl=0.4)) as run:
        # b has empty needs (so depends on a): a's packets reach b and c; send b's own.
        await run.streams["a"].send(message({"from": "a"}, **{"bubu.join.key": "k1"}))
        await run.streams["b"].send(message({"from": "b"}, **{"bubu.join.key": "k1"}))
        await until(
            lambda: any(r.metadata.get("bubu.join.complete") for r in run.inbox.of("c")),
            lambda: str(run.inbox.of("c")),
        )
        joined = next(r for r in run.inbox.of("c") if "joined" in r.payload)
        assert joined.payload["joined"] == {"a": {"from": "a"}, "b": {"from": "b"}}
        assert joined.metadata["bubu.join.parts"] == "a,b"
        # eviction: three open keys in a cache of two
        for key in ("e1", "e2", "e3"):
            await run.streams["b"].send(message({"from": "b"}, **{"bubu.join.key": key}))
        await until(
            lambda: run.counters("b").lost["join_evicted"] == 1,
            lambda: str(run.counters("b").lost),
        )
        # expiry: the two entries left are collected once their 1 s timeout has passed
        await until(
            lambda: run.counters("c").lost["join_expired"] == 2,
            lambda: str(run.counters("c").lost),
        )
        assert run.hub.join_parts_waiting() == 0


async def test_hash_partitioning_sets_the_envelope_partition() -> None:
    text = story(
        """    - {name: src, ref: {name: e}, transport: t}
    - {name: sink, ref: {name: e}, needs: [src], transport: t}
""",
        transport="""      streaming:
        partitioning: {mode: hash, key: metadata.user, partitions: 4}
""",
    )
    async with story_run(text, ["sink", "src"]) as run:
        users = ["ann", "bob", "cid", "ann", "bob", "ann"]
        for index, user in enumerate(users):
            await run.streams["src"].send(message({"n": index}, user=user))
        await until(lambda: len(run.inbox.of("sink")) == 6, lambda: str(run.inbox.of("sink")))
        by_user: dict[str, set[str]] = collections.defaultdict(set)
        for got in run.inbox.of("sink"):
            by_user[got.metadata["user"]].add(got.partition)
        assert all(len(parts) == 1 for parts in by_user.values())
        assert all(part.startswith("p") and int(part[1:]) < 4 for (part,) in by_user.values())
        order = [int(r.payload["n"]) for r in run.inbox.of("sink")]
        assert order == sorted(order)


async def test_storyrun_ready_reaches_the_gated_step_exactly_once() -> None:
    text = story(
        """    - {name: ingress, ref: {name: e}, transport: t}
    - name: greet
      ref: {name: e}
      needs: [ingress]
      transport: t
      if: '{{ eq (default "" packet.type) "storyrun.ready" }}'
    - {name: sink, ref: {name: e}, needs: [ingress], transport: t}
"""
    )
    async with story_run(text, ["greet", "sink", "ingress"]) as run:
        await until(lambda: len(run.inbox.of("greet")) == 1, lambda: str(run.inbox.packets))
        hook = run.inbox.of("greet")[0]
        assert hook.metadata["hook.event"] == "storyrun.ready"
        assert hook.payload["hook"]["data"]["storyRun"] == {"name": "run-1", "namespace": "default"}
        await run.streams["ingress"].send(message({"type": "speech"}))
        await until(lambda: len(run.inbox.of("sink")) == 1, lambda: str(run.inbox.packets))
        assert len(run.inbox.of("greet")) == 1  # the data packet failed greet's if
        assert run.hub.metrics.lifecycle["hook:storyrun.ready"] == 1


async def test_a_failing_template_rejects_that_packet_only() -> None:
    text = story(
        """    - {name: src, ref: {name: e}, transport: t}
    - name: sink
      ref: {name: e}
      needs: [src]
      transport: t
      runtime: {third: '{{ index packet.items 2 }}'}
"""
    )
    async with story_run(text, ["sink", "src"]) as run:
        await run.streams["src"].send(message({"items": [1]}))
        await run.streams["src"].send(message({"items": [1, 2, 3]}))
        await until(lambda: len(run.inbox.of("sink")) == 1, lambda: str(run.inbox.of("sink")))
        assert run.inbox.of("sink")[0].inputs == {"third": 3.0}
        counters = run.counters("src")
        assert sum(counters.template_errors.values()) == 1
        assert counters.lost["template_error"] == 1


def test_a_template_that_does_not_parse_is_refused_at_load_with_its_position() -> None:
    from bobravoz.runtime.story import StoryError, parse_story

    text = story(
        """    - {name: src, ref: {name: e}, transport: t}
    - name: sink
      ref: {name: e}
      needs: [src]
      transport: t
      if: '{{ eq packet.kind "x" '
"""
    )
    with pytest.raises(StoryError) as caught:
        parse_story(text, source="s.yaml")
    message_text = str(caught.value)
    assert "sink" in message_text
    assert caught.value.path == "$.spec.steps[1]"
    assert ":1:" in message_text  # line 1 of the template, then its column


async def test_max_downstreams_caps_the_targets_and_execute_story_is_a_run_request() -> None:
    text = story(
        """    - {name: src, ref: {name: e}, transport: t}
    - {name: a, ref: {name: e}, needs: [src], transport: t}
    - {name: b, ref: {name: e}, needs: [src], transport: t}
    - {name: c, ref: {name: e}, needs: [src], transport: t}
    - name: child
      type: executeStory
      needs: [src]
      transport: t
      with: {storyRef: {name: other}}
      runtime: {text: '{{ packet.text }}'}
""",
        transport="""      streaming:
        routing: {maxDownstreams: 2}
""",
    )
    async with story_run(text, ["a", "b", "c", "src"]) as run:
        await run.streams["src"].send(message({"text": "hi"}))
        await until(
            lambda: run.counters("src").run_requests["executeStory"] == 1,
            lambda: str(run.counters("src").run_requests),
        )
        await until(lambda: len(run.inbox.of("b")) == 1, lambda: str(run.inbox.packets))
        assert len(run.inbox.of("a")) == 1
        assert run.inbox.of("c") == []
        assert run.counters("src").filtered["max_downstreams"] == 1


async def test_a_full_block_buffer_holds_the_primitive_path_and_nothing_is_lost() -> None:
    """50 packets through a ``runtime`` template into a 5-message ``block`` buffer whose
    step connects only later: the source waits (backpressure), and every packet arrives once,
    in order, with consecutive sequences and its own rendered inputs."""
    text = story(
        """    - {name: src, ref: {name: e}, transport: t}
    - name: sink
      ref: {name: e}
      needs: [src]
      transport: t
      runtime: {n: '{{ packet.n }}'}
""",
        transport="""      streaming:
        backpressure: {buffer: {maxMessages: 5}}
""",
    )
    got = await late_sink_run(text, 50, lambda hub: _sink_depth(hub), 5)
    assert [r.inputs["n"] for r in got] == list(range(50))
    assert [r.payload["n"] for r in got] == list(range(50))
    assert [r.sequence for r in got] == list(range(1, 51))


async def test_a_template_cannot_change_what_later_packets_see() -> None:
    """Sprig's ``set`` changes maps in place: on the hub's shared state (step outputs, the
    packet seen by every target) it is refused, and the next packet sees the old values."""
    text = story(
        """    - {name: src, ref: {name: e}, transport: t}
    - name: a
      ref: {name: e}
      needs: [src]
      transport: t
      runtime: {tamper: '{{ set steps.src "n" 99 }}'}
    - name: b
      ref: {name: e}
      needs: [src]
      transport: t
      runtime: {n: '{{ packet.n }}', seen: '{{ steps.src.n }}'}
"""
    )
    async with story_run(text, ["a", "b", "src"]) as run:
        await run.streams["src"].send(message({"n": 1}))
        await until(lambda: len(run.inbox.of("b")) == 1, lambda: str(run.inbox.packets))
        assert run.inbox.of("b")[0].inputs == {"n": 1.0, "seen": 1.0}
        assert run.inbox.of("a") == []
        assert run.counters("src").template_errors == {"function_error": 1}


async def test_the_sleep_line_is_bounded_by_the_targets_buffer() -> None:
    """A step behind a ``sleep`` whose stream is not connected: its buffer (3) and its share
    of the sleep line (3) fill, then the source waits (backpressure), holding nothing more in
    the hub; once it connects, all 20 packets arrive once, in order."""
    text = story(
        """    - {name: src, ref: {name: e}, transport: t}
    - {name: pause, type: sleep, needs: [src], transport: t, with: {duration: 10ms}}
    - {name: sink, ref: {name: e}, needs: [pause], transport: t}
""",
        transport="""      streaming:
        backpressure: {buffer: {maxMessages: 3}}
""",
    )
    # the sink's buffer (3) and its share of the sleep line (3), and nothing more
    got = await late_sink_run(text, 20, lambda hub: _sink_depth(hub) + len(hub._delayed), 6)  # noqa: SLF001
    assert [r.payload["n"] for r in got] == list(range(20))
    assert [r.sequence for r in got] == list(range(1, 21))


async def test_a_packet_for_a_job_mode_engram_is_a_run_request() -> None:
    """The hybrid step of reference §5.4: a job-mode engram gets no stream; each packet for
    it is reported as a run request with the rendered ``runtime`` inputs."""
    text = story(
        """    - {name: ingress, ref: {name: e}, transport: t}
    - {name: live, ref: {name: e}, needs: [ingress], transport: t}
    - name: summarize
      ref: {name: summarizer}
      needs: [ingress]
      transport: t
      runtime: {text: '{{ packet.text }}'}
"""
    )
    async with story_run(text, ["live", "ingress"], job_steps=("summarize",)) as run:
        for text_value in ("a", "b"):
            await run.streams["ingress"].send(message({"text": text_value}))
        await until(lambda: len(run.inbox.of("live")) == 2, lambda: str(run.inbox.packets))
        assert run.counters("ingress").run_requests == {"job": 2}
        assert run.hub.find("default", "run-1", "summarize") is None
