"""The example Stories users recognise: voice-agent and transcript-fanout (reference §5.2).

For now: each Story parses and its topology computes, every engram step has its program, and
the toy engrams' pure parts and handlers (in-process, no sockets) do what the Stories rely
on: 50 PCM16 frames per second, utterances ended by ``speech.vad.inactive``, end-of-stream
markers that reach every step, and the counts a hub that evaluates the primitives should
produce (derived here from the engrams' own schedules, then checked against a small model of
the hub's contract).
"""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import trio
from example_engrams import example_engram as engram
from hypothesis import given, settings
from hypothesis import strategies as st

from bobravoz.runtime.story import load_story
from bobravoz.runtime.topology import streaming_topology
from bobravoz.sdk import AudioFrame, Packet, StreamContext
from bobravoz.sdk.accounting import story_has_primitives
from bobravoz.sdk.testkit import run_handler

REPO = Path(__file__).resolve().parents[2]
STORIES = REPO / "examples" / "stories"
ENGRAMS = REPO / "examples" / "engrams"
EOS_KEY = "bobravoz.example/eos"
DEBOUNCE_MS = 300

EXPECTED_EDGES = {
    "voice-agent": [
        ("ingress", "transcribe"),
        ("ingress", "greet"),
        ("transcribe", "debounce"),
        ("debounce", "respond"),
        ("respond", "synthesize"),
        ("greet", "synthesize"),
        ("synthesize", "playback"),
    ],
    "transcript-fanout": [
        ("source", "translate"),
        ("source", "filter"),
        ("translate", "archive"),
        ("filter", "archive"),
    ],
}


def summaries(out: str) -> list[dict[str, Any]]:
    """The ``summary`` report lines printed so far, in order."""
    found = []
    for line in out.splitlines():
        if line.startswith("{"):
            report = json.loads(line)
            if report.get("event") == "summary":
                found.append(report)
    return found


def is_eos(packet: Packet) -> bool:
    return packet.metadata.get(EOS_KEY) == "true"


def eos(**metadata: str) -> Packet:
    return Packet(metadata={EOS_KEY: "true", **metadata})


# --- The Stories -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED_EDGES))
def test_each_story_parses_and_its_topology_computes(name: str) -> None:
    story = load_story(STORIES / f"{name}.yaml")
    topology = streaming_topology(story)
    assert topology.story_name == name
    assert topology.namespace == "default"
    assert [(edge.source, edge.target) for edge in topology.edges] == EXPECTED_EDGES[name]
    # Fan-out, fan-in, templating and routing.mode hub: every step is on the hub.
    assert {node.mode for node in topology.steps} == {"hub"}
    for node in topology.streaming_steps():
        assert (ENGRAMS / f"{node.engram}.py").is_file(), node.engram


def test_the_voice_agent_declares_its_primitives() -> None:
    story = load_story(STORIES / "voice-agent.yaml")
    steps = {step.name: step for step in story.spec.steps}
    assert steps["debounce"].type == "sleep"
    assert steps["debounce"].with_ == {"duration": f"{DEBOUNCE_MS}ms"}
    assert "storyrun.ready" in (steps["greet"].if_ or "")
    assert steps["respond"].runtime == {
        "userPrompt": "{{ steps.transcribe.text }}",
        "speaker": "{{ packet.metadata.participant }}",
    }
    assert steps["synthesize"].runtime == {"text": "{{ packet.text }}"}
    assert [s.name for s in story.spec.steps if s.type is None] == [
        "ingress",
        "transcribe",
        "respond",
        "greet",
        "synthesize",
        "playback",
    ]


def test_the_fanout_story_is_reference_5_2() -> None:
    story = load_story(STORIES / "transcript-fanout.yaml")
    (transport,) = story.spec.transports
    streaming = transport.streaming
    assert streaming is not None
    assert streaming.routing is not None
    assert streaming.routing.fan_out == "parallel"
    rules = streaming.routing.rules or ()
    assert [(r.name, r.action, r.target.steps if r.target else None) for r in rules] == [
        ("english-only", "allow", ("translate",)),
        ("drop-noise", "deny", ("archive",)),
    ]
    assert streaming.fan_in is not None
    assert (streaming.fan_in.mode, streaming.fan_in.quorum) == ("quorum", 2)
    assert streaming.fan_in.timeout_seconds == 5


@pytest.mark.parametrize(
    ("story", "primitives"),
    [
        ("voice-agent", True),
        ("transcript-fanout", True),
        ("pipeline", False),
        ("fanout", False),
    ],
)
def test_stories_with_primitives_are_accounted_by_the_hub(story: str, primitives: bool) -> None:
    assert story_has_primitives(load_story(STORIES / f"{story}.yaml")) is primitives


# --- voice-ingress -----------------------------------------------------------------------

scripts: st.SearchStrategy[dict[str, Any]] = st.builds(
    dict,
    participants=st.lists(st.sampled_from(["alice", "bob", "carol"]), unique=True, min_size=1),
    utterances=st.integers(0, 4),
    frames_per_utterance=st.integers(1, 60),
    pause_ms=st.integers(DEBOUNCE_MS + 1, 2000),
    barge_ins=st.integers(0, 4),
    barge_in_frames=st.integers(1, 10),
)


@settings(max_examples=100, deadline=None)
@given(scripts)
def test_ingress_script_speaks_every_turn_and_its_follow_ups(config: dict[str, Any]) -> None:
    ingress = engram("voice-ingress")
    plan = ingress.script(**config)
    names = config["participants"]
    follow_ups = min(config["barge_ins"], config["utterances"])
    per_participant = config["utterances"] + follow_ups
    spoken = Counter(u.participant for u in plan)
    assert {name: spoken[name] for name in names} == dict.fromkeys(names, per_participant)
    assert set(spoken) <= set(names)
    for name in names:
        assert [u.number for u in plan if u.participant == name] == list(
            range(1, per_participant + 1)
        )
    assert sum(u.barge_in for u in plan) == follow_ups * len(names)
    for before, after in pairwise(plan):
        if after.barge_in:
            # Straight after the same participant's turn, no pause in between.
            assert after.participant == before.participant
            assert before.pause_ms == 0
            assert after.frames == config["barge_in_frames"]


@settings(max_examples=100, deadline=None)
@given(scripts)
def test_ingress_timeline_is_50_frames_per_second(config: dict[str, Any]) -> None:
    ingress = engram("voice-ingress")
    plan = ingress.script(**config)
    events = list(ingress.timeline_ms(plan))
    frames = [(due, u) for due, u, index in events if index is not None]
    assert len(frames) == sum(u.frames for u in plan)
    assert 1000 // ingress.FRAME_MS == 50
    for (due, utterance), (next_due, next_utterance) in pairwise(frames):
        if next_utterance == utterance:
            assert next_due - due == 1000 // 50
    # Each utterance's end marker comes after its last frame and before the next utterance.
    markers = [(due, u) for due, u, index in events if index is None]
    assert [u for _, u in markers] == plan
    dues = [due for due, _, _ in events]
    assert dues == sorted(dues)


def test_a_barge_in_ends_inside_the_debounce_and_a_normal_turn_outside_it() -> None:
    ingress = engram("voice-ingress")
    plan = ingress.script(["alice", "bob"], 2, 25, 700, 1, 5)
    ends = {u.id: due for due, u, index in ingress.timeline_ms(plan) if index is None}
    assert ends["alice-2"] - ends["alice-1"] < DEBOUNCE_MS
    assert ends["alice-3"] - ends["alice-2"] > DEBOUNCE_MS
    assert ends["bob-1"] - ends["alice-2"] > DEBOUNCE_MS


def test_pcm_frames_are_20ms_of_16khz_mono_pcm16_and_one_continuous_tone() -> None:
    ingress = engram("voice-ingress")
    assert engram("toy").BYTES_PER_FRAME == 640
    frequency = ingress.tone_frequency(0)
    frames = [ingress.pcm_frame(n, frequency) for n in range(50)]
    assert {len(frame) for frame in frames} == {640}
    samples = struct.unpack(f"<{50 * 320}h", b"".join(frames))
    step = 2 * math.pi * frequency / 16_000
    assert samples == tuple(round(8_000 * math.sin(step * i)) for i in range(50 * 320))
    # One second of audio: 2 * frequency sign changes, give or take the ends.
    changes = sum((a < 0) != (b < 0) for a, b in pairwise(samples))
    assert abs(changes - 2 * frequency) <= 2
    assert ingress.tone_frequency(1) != frequency


async def test_ingress_emits_frames_markers_and_the_end_marker(
    autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    ingress = engram("voice-ingress")
    config = {"participants": ["alice", "bob"], "utterances": 1, "framesPerUtterance": 3}
    out = await run_handler(ingress.handle, [], config=config, step="ingress")
    audio = [p.audio for p in out if p.audio is not None]
    assert len(audio) == 2 * (3 + 5)  # one turn each, plus its 5-frame barge-in follow-up
    assert {(a.codec, a.sample_rate_hz, a.channels, len(a.pcm)) for a in audio} == {
        ("pcm16", 16_000, 1, 640)
    }
    markers = [p for p in out if p.metadata.get("type") == "speech.vad.inactive"]
    assert [m.metadata["utterance"] for m in markers] == ["alice-1", "alice-2", "bob-1", "bob-2"]
    assert is_eos(out[-1])
    assert "participant" not in out[-1].metadata
    (summary,) = summaries(capsys.readouterr().out)
    assert (summary["role"], summary["sent"], summary["utterances"]) == ("source", 16, 4)
    assert summary["emitted"] == len(out)


# --- voice-transcribe, respond, greet, synthesize, playback ------------------------------


def frame(participant: str, pcm: bytes = b"\x00" * 640, **metadata: str) -> Packet:
    audio = AudioFrame(pcm=pcm, sample_rate_hz=16_000, channels=1, codec="pcm16")
    return Packet(audio=audio, metadata={"participant": participant, **metadata})


def end_of(participant: str, utterance: str) -> Packet:
    return Packet(
        metadata={
            "participant": participant,
            "utterance": utterance,
            "type": "speech.vad.inactive",
        }
    )


async def test_transcribe_emits_one_transcript_per_utterance(
    capsys: pytest.CaptureFixture[str],
) -> None:
    packets = [
        *(frame("alice") for _ in range(4)),
        frame("bob"),
        frame("alice", pcm=b"\x00" * 320),  # 10 ms: not a frame of this Story
        end_of("alice", "alice-1"),
        frame("bob"),
        end_of("bob", "bob-1"),
        eos(),
    ]
    out = await run_handler(engram("voice-transcribe").handle, packets, step="transcribe")
    assert [p.payload for p in out[:2]] == [
        {
            "text": "alice said alice-1 (80 ms)",
            "participant": "alice",
            "utterance": "alice-1",
            "frames": 4,
            "durationMs": 80,
        },
        {
            "text": "bob said bob-1 (40 ms)",
            "participant": "bob",
            "utterance": "bob-1",
            "frames": 2,
            "durationMs": 40,
        },
    ]
    assert out[0].metadata["participant"] == "alice"
    assert out[0].metadata["type"] == "speech.transcript.v1"
    assert is_eos(out[2])
    assert len(out) == 3
    (summary,) = summaries(capsys.readouterr().out)
    assert (summary["transcripts"], summary["bad_frames"], summary["unfinished"]) == (2, 1, 0)


def test_respond_reads_the_rendered_inputs_and_notices_a_stale_prompt() -> None:
    respond = engram("voice-respond")
    transcript = {"text": "alice said alice-2 (100 ms)", "participant": "alice"}
    rendered = Packet(
        payload=transcript,
        inputs={"userPrompt": "alice said alice-2 (100 ms)", "speaker": "alice"},
    )
    prompt = respond.prompt_of(rendered)
    assert (prompt.text, prompt.speaker, prompt.from_inputs, prompt.matches_packet) == (
        "alice said alice-2 (100 ms)",
        "alice",
        True,
        True,
    )
    assert respond.reply_text(prompt) == "Hi alice, I heard: alice said alice-2 (100 ms)"
    stale = Packet(payload=transcript, inputs={"userPrompt": "bob said bob-1", "speaker": "x"})
    assert respond.prompt_of(stale).matches_packet is False
    bare = respond.prompt_of(Packet(payload=transcript, metadata={"participant": "alice"}))
    assert (bare.from_inputs, bare.speaker, bare.text) == (False, "alice", transcript["text"])


async def test_respond_replies_and_forwards_the_end_marker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    packets = [
        Packet(
            payload={"text": "bob said bob-3 (500 ms)"},
            inputs={"userPrompt": "bob said bob-3 (500 ms)", "speaker": "bob"},
            metadata={"participant": "bob", "utterance": "bob-3"},
        ),
        eos(),
    ]
    out = await run_handler(engram("voice-respond").handle, packets, step="respond")
    assert out[0].payload == {
        "text": "Hi bob, I heard: bob said bob-3 (500 ms)",
        "participant": "bob",
        "inReplyTo": "bob-3",
    }
    assert out[0].metadata["type"] == "chat.reply.v1"
    assert out[0].metadata["participant"] == "bob"
    assert is_eos(out[1])
    (summary,) = summaries(capsys.readouterr().out)
    assert (summary["replies"], summary["inputs_missing"], summary["prompt_mismatch"]) == (
        1,
        0,
        0,
    )


def hook_packet() -> Packet:
    """The hub's storyrun.ready hook as the primitives contract describes it."""
    return Packet(
        payload={"kind": "hook", "type": "storyrun.ready", "hook": {"event": "storyrun.ready"}},
        metadata={"type": "storyrun.ready", "kind": "hook", "hook.event": "storyrun.ready"},
    )


async def test_greet_says_hello_once_on_the_ready_hook_and_ends(
    capsys: pytest.CaptureFixture[str],
) -> None:
    greet = engram("voice-greet")
    out = await run_handler(greet.handle, [hook_packet(), hook_packet()], step="greet")
    assert [p.payload for p in out[:-1]] == [
        {"text": "Hello! How can I help you today?", "kind": "greeting"}
    ]
    assert is_eos(out[-1])
    assert greet.is_ready_hook(Packet(payload={"type": "storyrun.ready"}))
    assert not greet.is_ready_hook(Packet(metadata={"type": "speech.vad.inactive"}))
    (summary,) = summaries(capsys.readouterr().out)
    assert (summary["greeted"], summary["ungated"]) == (1, 0)


async def test_greet_never_hangs_without_the_hook(
    autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    greet = engram("voice-greet")
    # A hub that does not gate: everything from ingress, then its end marker.
    out = await run_handler(greet.handle, [frame("alice"), eos()], step="greet")
    assert len(out) == 1
    assert is_eos(out[0])

    # No packet at all, and the stream stays open: the hook timeout ends it.
    inbox_send, inbox_receive = trio.open_memory_channel[Packet](1)
    outbox_send, outbox_receive = trio.open_memory_channel[Packet](10)
    context = StreamContext(
        inbox=inbox_receive, outbox=outbox_send, config={"hookTimeoutSeconds": 5}, step="greet"
    )
    async with inbox_send:
        await greet.handle(context)
    assert is_eos(outbox_receive.receive_nowait())
    reports = summaries(capsys.readouterr().out)
    assert [(r["greeted"], r["ungated"]) for r in reports] == [(0, 1), (0, 0)]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.integers(1, 200))
def test_synthesize_says_a_text_in_enough_20ms_frames(text: str, ms_per_char: int) -> None:
    frames = engram("voice-synthesize").frames_for(text, ms_per_char)
    assert frames >= 1
    assert frames * 20 >= len(text) * ms_per_char
    assert frames == 1 or (frames - 1) * 20 < len(text) * ms_per_char


async def test_synthesize_speaks_each_text_and_waits_for_every_upstream(
    capsys: pytest.CaptureFixture[str],
) -> None:
    synthesize = engram("voice-synthesize")
    packets = [
        Packet(payload={"text": "Hello!"}, inputs={"text": "Hello!"}),
        eos(),  # greet's marker: respond has not finished
        Packet(
            payload={"text": "Hi bob"},
            inputs={"text": "Hi bob"},
            metadata={"participant": "bob"},
        ),
        eos(),
    ]
    config = {"sources": 2, "realtime": False}
    out = await run_handler(synthesize.handle, packets, config=config, step="synthesize")
    audio = [p for p in out if p.audio is not None]
    assert len(audio) == 12  # one 20 ms frame per character
    assert {len(p.audio.pcm) for p in audio if p.audio is not None} == {640}
    firsts = [p for p in audio if p.payload is not None]
    assert [p.payload for p in firsts] == [
        {"text": "Hello!", "frames": 6},
        {"text": "Hi bob", "frames": 6},
    ]
    assert [p.metadata.get("participant") for p in firsts] == [None, "bob"]
    assert [p.metadata["synthesis.frame"] for p in audio[:6]] == [str(i) for i in range(6)]
    assert is_eos(out[-1])
    assert sum(is_eos(p) for p in out) == 1
    (summary,) = summaries(capsys.readouterr().out)
    assert (summary["texts"], summary["frames"], summary["eos"]) == (2, 12, 2)


def test_playback_counts_frames_texts_gaps_and_reorders() -> None:
    playback = engram("voice-playback")
    player = playback.Player()

    def synth(synthesis: str, index: int, frames: int, text: str | None = None) -> Packet:
        audio = AudioFrame(pcm=b"\x00" * 640, sample_rate_hz=16_000, channels=1, codec="pcm16")
        metadata = {
            "synthesis.id": synthesis,
            "synthesis.frame": str(index),
            "synthesis.frames": str(frames),
        }
        return Packet(audio=audio, metadata=metadata, payload={"text": text} if text else None)

    for packet in [
        synth("s-1", 0, 3, "one"),
        synth("s-1", 1, 3),
        synth("s-1", 2, 3),
        synth("s-2", 0, 4, "two"),
        synth("s-2", 2, 4),
        synth("s-2", 1, 4),  # late
    ]:
        player.play(packet)
    player.play(Packet(audio=AudioFrame(pcm=b"\x00" * 10, codec="pcm16")))
    assert player.texts == ["one", "two"]
    assert (player.frames, player.bad_frames, player.out_of_order) == (6, 1, 1)
    assert (player.complete, player.missing_frames) == (1, 1)


# --- The voice agent, end to end in-process with a model of the hub ----------------------


def surviving_transcripts(plan: list[Any], ends_ms: dict[str, int]) -> list[str]:
    """The utterances a debounce with cancelPrevious per participant lets through: those not
    followed by the same participant's next transcript within the debounce."""
    survivors = []
    for utterance in plan:
        later = [
            ends_ms[u.id] - ends_ms[utterance.id]
            for u in plan
            if u.participant == utterance.participant and u.number == utterance.number + 1
        ]
        if not later or later[0] >= DEBOUNCE_MS:
            survivors.append(utterance.id)
    return survivors


def voice_agent_config() -> dict[str, Any]:
    story = load_story(STORIES / "voice-agent.yaml")
    (ingress,) = (step for step in story.spec.steps if step.name == "ingress")
    return dict(ingress.with_ or {})


async def test_voice_agent_chain_with_a_model_of_the_hub(
    autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    config = voice_agent_config()
    ingress = engram("voice-ingress")
    plan = ingress.script(
        config["participants"],
        config["utterances"],
        config["framesPerUtterance"],
        config["pauseMs"],
        config["bargeIns"],
        config["bargeInFrames"],
    )
    ends = {u.id: due for due, u, index in ingress.timeline_ms(plan) if index is None}
    survivors = surviving_transcripts(plan, ends)
    assert survivors == ["alice-2", "bob-2", "alice-3", "bob-3"]

    spoken = await run_handler(ingress.handle, [], config=config, step="ingress")
    assert len([p for p in spoken if p.audio is not None]) == 110
    transcripts = await run_handler(engram("voice-transcribe").handle, spoken, step="transcribe")
    # The hub: debounce + cancelPrevious drop the barged-in transcripts; runtime renders.
    delivered = [
        Packet(
            payload=p.payload,
            metadata=p.metadata,
            inputs={
                "userPrompt": (p.payload or {}).get("text", ""),
                "speaker": p.metadata.get("participant", ""),
            },
        )
        for p in transcripts
        if is_eos(p) or p.metadata["utterance"] in survivors
    ]
    cancelled = len(transcripts) - len(delivered)
    replies = await run_handler(engram("voice-respond").handle, delivered, step="respond")
    greeting = await run_handler(engram("voice-greet").handle, [hook_packet()], step="greet")

    def rendered(packets: Iterable[Packet]) -> list[Packet]:
        return [
            Packet(
                payload=p.payload,
                metadata=p.metadata,
                inputs=None if is_eos(p) else {"text": (p.payload or {}).get("text", "")},
            )
            for p in packets
        ]

    to_synthesize = rendered([*greeting[:-1], *replies[:-1], greeting[-1], replies[-1]])
    voice = await run_handler(
        engram("voice-synthesize").handle, to_synthesize, config={"sources": 2}, step="synth"
    )
    await run_handler(engram("voice-playback").handle, voice, step="playback")

    reports = {r["step"]: r for r in summaries(capsys.readouterr().out)}
    assert cancelled == 2
    assert reports["transcribe"]["transcripts"] == 6
    assert reports["respond"]["replies"] == 4
    assert reports["greet"]["greeted"] == 1
    played = reports["playback"]
    assert played["texts"] == [
        "Hello! How can I help you today?",
        "Hi alice, I heard: alice said alice-2 (100 ms)",
        "Hi bob, I heard: bob said bob-2 (100 ms)",
        "Hi alice, I heard: alice said alice-3 (500 ms)",
        "Hi bob, I heard: bob said bob-3 (500 ms)",
    ]
    assert played["received"] == sum(len(text) for text in played["texts"]) == 204
    assert (played["complete"], played["missing_frames"], played["out_of_order"]) == (5, 0, 0)


# --- The fan-out Story: text-emitter, translator, json-filter, archiver -------------------


def test_text_emitter_items_mix_languages_and_noise() -> None:
    emitter = engram("text-emitter")
    items = [emitter.item(n) for n in range(1, 41)]
    assert Counter(metadata["lang"] for _, metadata in items) == {"en": 20, "fr": 20}
    noisy = [n for n, (_, metadata) in enumerate(items, 1) if metadata["noisy"] == "true"]
    assert noisy == [5, 10, 15, 20, 25, 30, 35, 40]
    for number, (payload, metadata) in enumerate(items, 1):
        assert payload["id"] == number
        assert payload["lang"] == metadata["lang"]
        # Only items that go down both branches need joining.
        assert ("bubu.join.key" in metadata) == (metadata["lang"] == "en")
    assert items[0][1]["bubu.join.key"] == "item-1"


def fanout_route(
    items: list[tuple[dict[str, Any], dict[str, str]]],
) -> tuple[dict[str, list[Packet]], Counter[str]]:
    """A model of the hub for transcript-fanout's source: the english-only allow rule on
    translate. Returns the packets per step and what was filtered, by reason."""
    filtered: Counter[str] = Counter()
    routed: dict[str, list[Packet]] = {"translate": [], "filter": []}
    for payload, metadata in items:
        packet = Packet(payload=payload, metadata=metadata)
        if metadata.get("lang") == "en":
            routed["translate"].append(packet)
        else:
            filtered["not_allowed"] += 1
        routed["filter"].append(packet)
    return routed, filtered


def fanin(
    branches: dict[str, list[Packet]], filtered: Counter[str]
) -> tuple[list[Packet], Counter[str]]:
    """A model of the hub for archive: drop-noise denies, then the quorum-2 join per
    ``bubu.join.key`` (packets without one pass alone)."""
    delivered: list[Packet] = []
    parts: dict[str, dict[str, Any]] = {}
    for step in ("translate", "filter"):
        for packet in branches[step]:
            if is_eos(packet):
                delivered.append(packet)
                continue
            if packet.metadata.get("noisy") == "true":
                filtered["rule_denied"] += 1
                continue
            key = packet.metadata.get("bubu.join.key")
            if key is None:
                delivered.append(packet)
                continue
            joined = parts.setdefault(key, {})
            joined[step] = packet.payload
            if len(joined) == 2:
                delivered.append(
                    Packet(
                        payload={"joined": joined},
                        metadata={**packet.metadata, "bubu.join.complete": "true"},
                    )
                )
            else:
                filtered["joined"] += 1
    return delivered, filtered


async def test_fanout_chain_with_a_model_of_the_hub(
    autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    story = load_story(STORIES / "transcript-fanout.yaml")
    configs = {step.name: dict(step.with_ or {}) for step in story.spec.steps}
    emitted = await run_handler(
        engram("text-emitter").handle, [], config=configs["source"], step="source"
    )
    items = [(p.payload or {}, p.metadata) for p in emitted[:-1]]
    routed, filtered = fanout_route(items)
    # The end marker passes every rule, so it reaches every step.
    marker = emitted[-1]
    assert is_eos(marker)
    assert marker.metadata["lang"] == "en"
    assert marker.metadata["noisy"] == "false"
    assert "bubu.join.key" not in marker.metadata
    branches = {
        "translate": await run_handler(
            engram("translator").handle,
            [*routed["translate"], marker],
            config=configs["translate"],
            step="translate",
        ),
        "filter": await run_handler(
            engram("json-filter").handle,
            [*routed["filter"], marker],
            config=configs["filter"],
            step="filter",
        ),
    }
    delivered, filtered = fanin(branches, filtered)
    await run_handler(engram("archiver").handle, delivered, config=configs["archive"])
    reports = {r["step"]: r for r in summaries(capsys.readouterr().out)}
    assert reports["source"]["sent"] == 40
    assert reports["translate"]["translated"] == 20
    assert reports["translate"]["not_english"] == 0
    assert reports["filter"]["fields_removed"] == 40  # every item's debug field
    archive = reports["test-step"]
    assert (archive["joined"], archive["plain"], archive["received"]) == (16, 16, 32)
    assert (archive["noisy"], archive["duplicates"], archive["eos"]) == (0, 0, 2)
    assert filtered == {"not_allowed": 20, "rule_denied": 12, "joined": 16}
    joined = next(p for p in delivered if p.payload and "joined" in p.payload)
    assert joined.payload is not None
    assert joined.payload["joined"]["translate"]["text"] == "bon matin"
    assert joined.payload["joined"]["filter"] == {"id": 1, "text": "good morning", "lang": "en"}


def test_translator_and_filter_pure_parts() -> None:
    translator = engram("translator")
    assert translator.translate("thank you all") == "merci vous tous"
    assert translator.translate("unknown words stay") == "unknown words stay"
    project: Callable[..., dict[str, Any]] = engram("json-filter").project
    assert project({"id": 1, "text": "t", "debug": {}}, {"id", "text"}) == {"id": 1, "text": "t"}


def test_archiver_files_joined_partial_and_plain_records() -> None:
    archive = engram("archiver").Archive()
    archive.file(
        Packet(
            payload={"joined": {"translate": {"id": 1}, "filter": {"id": 1}}},
            metadata={"bubu.join.complete": "false"},
        )
    )
    archive.file(Packet(payload={"id": 2}, metadata={"noisy": "true"}))
    archive.file(Packet(payload={"id": 2}))
    assert (archive.joined, archive.partial, archive.plain, archive.records) == (1, 1, 2, 3)
    assert (archive.noisy, archive.duplicates) == (1, 1)
