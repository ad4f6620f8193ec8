"""The hub's Story primitives, with real processes: ``bobravoz up`` runs a hub, one connector
per engram step and each engram as its own OS process, and prints its summary.

Each test runs a Story (the examples in ``examples/stories`` or the small fixtures in
``tests/fixtures/primitives``, whose toy engrams are in ``tests/fixtures/primitives/engrams``)
to its end and checks what the summary says: what the Story filtered and the transport lost,
by reason, and each engram's own report (the fixture sinks report every packet they got as
one JSON text, ``seen``). The expected outcomes are worked out here from the Stories' own
configuration (a small model of the primitives' contract), not copied from a run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from example_engrams import example_engram

from bobravoz.runtime.story import Story, load_story

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "primitives"
FIXTURE_ENGRAMS = FIXTURES / "engrams"
EXAMPLES = REPO / "examples"
CLI = [sys.executable, "-m", "bobravoz.sdk.cli"]
#: Bounds of one ``bobravoz up`` run: its own ``--duration`` and the test's wait for it (a
#: busy machine starts a dozen Python processes slowly; a run normally takes 5-25 s).
RUN_DURATION = 60
RUN_TIMEOUT = 120


# --- running ``bobravoz up`` and reading its summary -----------------------------------


@dataclass
class UpRun:
    """One finished ``bobravoz up`` run: exit status, output, and its summary parsed."""

    status: int
    stdout: str
    stderr: str
    counts: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    template_errors: dict[str, int] = field(default_factory=dict)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def output(self) -> str:
        """Both streams, for assertion messages."""
        return f"exit {self.status}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"

    def step(self, name: str) -> dict[str, Any]:
        """The summary line of engram step ``name``, as a dict."""
        assert name in self.steps, f"no summary line for step {name}\n{self.output}"
        return self.steps[name]

    def seen(self, name: str) -> list[dict[str, Any]]:
        """What fixture sink ``name`` recorded, in arrival order."""
        records = json.loads(self.step(name)["seen"])
        assert isinstance(records, list)
        return records


_PAIR = re.compile(r"\s*([A-Za-z_][\w.-]*)=")
_COUNT = re.compile(r"^(sent|delivered|dropped|rejected|lost|reordered)\s+(\d+)\b")
_FILTERED = re.compile(r"^filtered\s+(\d+) by the Story(?: \((.*)\))?$")
_TEMPLATES = re.compile(r"^templates\s+(\d+) evaluations failed.*\((.*)\)$")
_STEP = re.compile(r"^step\s+(\S+?):\s?(.*)$")


def parse_fields(text: str) -> dict[str, Any]:
    """``key=value`` pairs of a summary step line; each value is JSON (a number, a quoted
    string, a list or a map), else the bare word."""
    decoder = json.JSONDecoder()
    fields: dict[str, Any] = {}
    position = 0
    while position < len(text.rstrip()):
        match = _PAIR.match(text, position)
        if match is None:
            raise ValueError(f"unreadable step fields at {text[position:]!r}")
        try:
            value, position = decoder.raw_decode(text, match.end())
        except ValueError:
            end = text.find(" ", match.end())
            end = len(text) if end < 0 else end
            value, position = text[match.end() : end], end
        fields[match.group(1)] = value
    return fields


def parse_reasons(text: str | None) -> dict[str, int]:
    """``reason=count, ...`` as a dict."""
    reasons: dict[str, int] = {}
    for part in (text or "").split(","):
        if part.strip():
            reason, _, count = part.strip().partition("=")
            reasons[reason] = int(count)
    return reasons


def parse_summary(run: UpRun) -> None:
    """Fill ``run``'s counts, reasons and step lines from its printed summary."""
    lines = run.stdout.splitlines()
    for index, line in enumerate(lines):
        if match := _COUNT.match(line):
            run.counts[match.group(1)] = int(match.group(2))
            following = lines[index + 1] if index + 1 < len(lines) else ""
            if match.group(1) == "lost" and following.startswith("  by reason: "):
                run.lost = parse_reasons(following.removeprefix("  by reason: "))
        elif match := _FILTERED.match(line):
            run.counts["filtered"] = int(match.group(1))
            run.filtered = parse_reasons(match.group(2))
        elif match := _TEMPLATES.match(line):
            run.counts["templates"] = int(match.group(1))
            run.template_errors = parse_reasons(match.group(2))
        elif match := _STEP.match(line):
            run.steps[match.group(1)] = parse_fields(match.group(2))


def bobravoz_up(story: Path, *args: str, engrams: Path | None = FIXTURE_ENGRAMS) -> UpRun:
    """Run ``bobravoz up STORY --quiet`` to its end (every engram finished) and parse what it
    printed. Waits for the process to exit (bounded by RUN_TIMEOUT)."""
    argv = [*CLI, "up", str(story), "--quiet", "--duration", str(RUN_DURATION), *args]
    if engrams is not None:
        argv += ["--engrams-dir", str(engrams)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=REPO)
    run = UpRun(done.returncode, done.stdout, done.stderr)
    parse_summary(run)
    return run


def assert_story_summary(run: UpRun, *, lossless: bool = True) -> None:
    """The run printed a Story summary, no process failed, no template failed, nothing broke
    the wire contract, nothing was reordered; with ``lossless`` nothing was counted lost."""
    assert "== bobravoz up: summary ==" in run.stdout, run.output
    assert "failed " not in run.stdout, run.output
    assert run.counts.get("templates", 0) == 0, run.output
    assert run.counts["rejected"] == 0, run.output
    assert run.counts["reordered"] == 0, run.output
    if lossless:
        assert run.counts["lost"] == 0, run.output
        assert run.lost == {}, run.output
        assert "in its SDK" not in run.stdout, run.output  # an engram SDK's loss
        assert run.status == 0, run.output


def step_config(story: Story, name: str) -> dict[str, Any]:
    """The ``with`` of step ``name``."""
    (step,) = (step for step in story.spec.steps if step.name == name)
    config = step.with_
    assert isinstance(config, dict)
    return config


def scripted(story: Story, step: str) -> list[dict[str, Any]]:
    """The packets a ``script-source`` step is configured to send."""
    packets = step_config(story, step)["packets"]
    assert isinstance(packets, list)
    return packets


# --- rules, a payload ``if``, ``runtime`` and the storyrun.ready hook (one run) ----------

ROUTING = FIXTURES / "routing.yaml"
RUN_INPUTS = {"who": "tester"}


@pytest.fixture(scope="module")
def routing_run() -> UpRun:
    run = bobravoz_up(ROUTING, "--inputs", json.dumps(RUN_INPUTS))
    assert_story_summary(run)
    return run


@pytest.fixture(scope="module")
def routing_items() -> list[dict[str, Any]]:
    """The emitter's items: payload fields plus ``lang`` and ``secret`` from metadata."""
    items = []
    for entry in scripted(load_story(ROUTING), "emitter"):
        metadata = entry["metadata"]
        items.append({**entry["payload"], "lang": metadata["lang"], "secret": metadata["secret"]})
    return items


def ids(records: list[dict[str, Any]]) -> list[int]:
    return [int(record["payload"]["id"]) for record in records]


def test_routing_rules_send_packets_to_different_sinks(
    routing_run: UpRun, routing_items: list[dict[str, Any]]
) -> None:
    def allowed(lang: str) -> Callable[[dict[str, Any]], bool]:
        return lambda item: item["lang"] == lang and item["secret"] != "true"

    for sink, lang in (("english", "en"), ("french", "fr")):
        expected = [item["id"] for item in routing_items if allowed(lang)(item)]
        assert expected, "the fixture must route something to each sink"
        assert ids(routing_run.seen(sink)) == expected, routing_run.output
    # Denied first (no-secret, for both sinks), else not allowed (the other sink's language).
    secrets = sum(item["secret"] == "true" for item in routing_items)
    not_allowed = sum(
        item["secret"] != "true" and item["lang"] != lang
        for item in routing_items
        for lang in ("en", "fr")
    )
    assert routing_run.filtered["rule_denied"] == 2 * secrets, routing_run.output
    assert routing_run.filtered["not_allowed"] == not_allowed, routing_run.output
    # Steps no rule targets get every item, whatever its language.
    assert ids(routing_run.seen("prompt")) == [item["id"] for item in routing_items]


def test_an_if_filters_by_payload(routing_run: UpRun, routing_items: list[dict[str, Any]]) -> None:
    expected = [item["id"] for item in routing_items if item["score"] >= 70]
    assert 0 < len(expected) < len(routing_items)
    assert ids(routing_run.seen("big")) == expected, routing_run.output
    # if_false: big's low scores, and every item at greet (only the hook passes its `if`).
    held_back = len(routing_items) - len(expected) + len(routing_items)
    assert routing_run.filtered["if_false"] == held_back, routing_run.output
    assert set(routing_run.filtered) == {"if_false", "rule_denied", "not_allowed"}


def test_runtime_builds_the_inputs_from_the_packet(
    routing_run: UpRun, routing_items: list[dict[str, Any]]
) -> None:
    seen = routing_run.seen("prompt")
    assert len(seen) == len(routing_items), routing_run.output
    for record, item in zip(seen, routing_items, strict=True):
        assert record["inputs"] == {
            "prompt": f"{item['name']} says {item['text']}",  # packet payload fields
            "id": item["id"],  # one action: the value keeps its type
            "lang": item["lang"],  # packet.metadata
            "latest": item["name"],  # steps.emitter: that step's latest output
            "who": RUN_INPUTS["who"],  # the StoryRun's inputs (bobravoz up --inputs)
        }, routing_run.output
        # The payload itself is delivered unchanged.
        assert record["payload"] == {k: item[k] for k in ("id", "name", "text", "score")}


def test_the_greeting_step_receives_exactly_one_storyrun_ready(routing_run: UpRun) -> None:
    (hook,) = routing_run.seen("greet")  # the whole run long: one hook, no data packet
    assert hook["meta:type"] == "storyrun.ready", routing_run.output
    assert hook["meta:kind"] == "hook"
    assert hook["meta:hook.event"] == "storyrun.ready"
    assert hook["meta:hook.source"] == "hub"
    assert hook["meta:bubu.envelope.message_id"] == "default/local:storyrun.ready"
    payload = hook["payload"]
    assert (payload["kind"], payload["type"]) == ("hook", "storyrun.ready")
    assert payload["hook"]["event"] == "storyrun.ready"
    assert payload["hook"]["data"]["storyRun"] == {"name": "local", "namespace": "default"}


# --- a quorum join: the timeout path and the eviction path ------------------------------

QUORUM_JOIN = FIXTURES / "quorum-join.yaml"
UPSTREAMS = ("a", "b", "c")


@dataclass(frozen=True)
class JoinPlan:
    """The keys the ticker asks about, by kind (ok, gone, late), and the fan-in limits."""

    keys: dict[str, list[str]]
    max_entries: int

    @property
    def evicted(self) -> int:
        """``gone`` keys get one part each; past the cache's room the oldest are evicted."""
        return len(self.keys["gone"]) - self.max_entries

    @property
    def expired(self) -> int:
        """Parts that time out: the ``gone`` entries left in the cache; each ``late`` key's
        part from a, then the slow b's part (which, arriving after the expiry, starts an
        entry of its own that expires in turn)."""
        return self.max_entries + 2 * len(self.keys["late"])


@pytest.fixture(scope="module")
def join_plan() -> JoinPlan:
    story = load_story(QUORUM_JOIN)
    keys: dict[str, list[str]] = {"ok": [], "gone": [], "late": []}
    for entry in scripted(story, "ticker"):
        key = entry["payload"]["key"]
        keys[key.split("-")[0]].append(key)
    (transport,) = story.spec.transports
    assert transport.streaming is not None
    fan_in = transport.streaming.fan_in
    assert fan_in is not None
    assert fan_in.max_entries is not None
    assert (fan_in.mode, fan_in.quorum) == ("quorum", 2)
    assert len(keys["gone"]) > fan_in.max_entries, "the gone keys must overflow the cache"
    return JoinPlan(keys, fan_in.max_entries)


@pytest.fixture(scope="module")
def join_run() -> UpRun:
    run = bobravoz_up(QUORUM_JOIN)
    assert_story_summary(run, lossless=False)
    return run


def test_a_quorum_join_with_a_slow_upstream_and_a_missing_one(
    join_run: UpRun, join_plan: JoinPlan
) -> None:
    ok = join_plan.keys["ok"]
    # What the Story asks the responders: a answers everything, b the ok keys at once and
    # the late ones late, c only the ok keys.
    everything = sum(len(keys) for keys in join_plan.keys.values())
    assert join_run.step("a")["answered"] == everything, join_run.output
    assert join_run.step("b")["answered"] == len(ok) + len(join_plan.keys["late"])
    assert join_run.step("c")["answered"] == len(ok)
    # Only the ok keys reach the sink: joined on their first two parts, complete.
    seen = join_run.seen("sink")
    assert sorted(record["meta:bubu.join.key"] for record in seen) == sorted(ok), join_run.output
    for record in seen:
        key = record["meta:bubu.join.key"]
        parts = record["meta:bubu.join.parts"].split(",")
        assert len(parts) == 2, record
        assert parts == [name for name in UPSTREAMS if name in parts], "Story order"
        assert record["meta:bubu.join.complete"] == "true"
        assert record["payload"] == {"joined": {name: {"key": key, "by": name} for name in parts}}
    # The third part of each ok key comes after its join.
    assert join_run.filtered["join_late"] == len(ok), join_run.output
    # Eviction (gone keys past maxEntries) and expiry (timeoutSeconds), each part counted.
    assert join_run.lost == {
        "join_evicted": join_plan.evicted,
        "join_expired": join_plan.expired,
    }, join_run.output
    assert join_run.counts["lost"] == join_plan.evicted + join_plan.expired
    assert join_run.status == 1, "counted loss makes bobravoz up fail"


def test_every_part_offered_to_a_join_is_counted_once(join_run: UpRun, join_plan: JoinPlan) -> None:
    # Each part ends in exactly one place: the joined packet delivered (the part that
    # completes it), filtered `joined` (the parts that join absorbed), filtered `join_late`
    # (after completion), or lost (`join_evicted`, `join_expired`).
    keys = join_plan.keys
    offered = sum(join_run.step(name)["answered"] for name in UPSTREAMS)
    assert offered == 3 * len(keys["ok"]) + len(keys["gone"]) + 2 * len(keys["late"])
    assert join_run.filtered["joined"] == len(keys["ok"]), join_run.output
    delivered = len(join_run.seen("sink"))
    counted = (
        delivered
        + join_run.filtered["joined"]
        + join_run.filtered["join_late"]
        + join_run.counts["lost"]
    )
    assert counted == offered, join_run.output


# --- hash partitioning ------------------------------------------------------------------

PARTITIONS = FIXTURES / "partitions.yaml"


def fnv1a_32(data: bytes) -> int:
    """32-bit FNV-1a (the hash the partitioning contract names)."""
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def test_hash_partitioning_keeps_per_partition_order() -> None:
    story = load_story(PARTITIONS)
    config = step_config(story, "source")
    users, count = config["users"], config["count"]
    (transport,) = story.spec.transports
    assert transport.streaming is not None
    partitioning = transport.streaming.partitioning
    assert partitioning is not None
    assert partitioning.partitions is not None
    run = bobravoz_up(PARTITIONS)
    assert_story_summary(run)
    seen = run.seen("sink")
    assert len(seen) == count, run.output
    by_partition: dict[str, list[int]] = {}
    by_user: dict[str, list[int]] = {}
    for record in seen:
        user = record["meta:user"]
        assert record["payload"]["user"] == user
        assert record["partition"] == f"p{fnv1a_32(user.encode()) % partitioning.partitions}"
        assert record["inputs"] == {"user": user}  # runtime and partition on one packet
        by_partition.setdefault(record["partition"], []).append(int(record["payload"]["index"]))
        by_user.setdefault(user, []).append(int(record["payload"]["seq"]))
    assert len(by_partition) > 1, "the fixture's users should spread over partitions"
    for partition, indexes in by_partition.items():
        assert indexes == sorted(indexes), f"partition {partition} out of order"
    for user, seqs in by_user.items():
        assert seqs == list(range(1, len(seqs) + 1)), f"user {user}'s packets out of order"
    assert sorted(by_user) == sorted(users)


# --- a 30 MiB binary payload ------------------------------------------------------------

BIG_BINARY = FIXTURES / "big-binary.yaml"
CHUNK_BYTES = 1024 * 1024  # the SDK's default BOBRAVOZ_CHUNK_BYTES


def test_a_30_mib_binary_payload_is_chunked_routed_and_reassembled_byte_identical() -> None:
    by_kind = {
        entry["metadata"]["kind"]: int(entry["randomBytes"])
        for entry in scripted(load_story(BIG_BINARY), "source")
    }
    assert by_kind["blob"] == 30 * 1024 * 1024
    run = bobravoz_up(BIG_BINARY)
    assert_story_summary(run)
    assert run.step("source")["binary_bytes"] == sum(by_kind.values()), run.output
    (record,) = run.seen("sink")
    assert record["meta:kind"] == "blob"
    assert record["size"] == by_kind["blob"] == int(record["meta:size"])
    assert record["sha256"] == record["meta:sha256"], "reassembled bytes differ"
    # The decoy's chunk set was held back whole by the gate's `if` (one decision for the
    # set, counted per chunk packet): none of it reached the sink.
    decoy_chunks = -(-by_kind["decoy"] // CHUNK_BYTES)
    assert decoy_chunks > 1
    assert run.filtered == {"if_false": decoy_chunks}, run.output


ORPHAN_CHUNK = FIXTURES / "orphan-chunk.yaml"
_ENGRAM_LOSS = re.compile(r"^engram\s+(\S+) lost (\d+) in its SDK: (.*)$", re.MULTILINE)


def test_a_chunk_set_that_never_completes_is_lost_at_the_sink_loudly() -> None:
    run = bobravoz_up(ORPHAN_CHUNK)
    # The whole packet and the end marker reach the sink's handler; the half set does not.
    assert [r["meta:kind"] for r in run.seen("sink")] == ["whole"], run.output
    assert run.counts["lost"] == 0, run.output  # the transport lost nothing: it carried it
    assert _ENGRAM_LOSS.findall(run.stdout) == [("sink", "1", "chunk_set_incomplete=1")], run.output
    assert run.status == 1, run.output
    assert "lost in the SDK (chunk_set_incomplete: 1 so far)" in run.stderr, run.output


# --- cancelPrevious per participant -----------------------------------------------------

BARGE_IN = FIXTURES / "barge-in.yaml"


def test_cancel_previous_cancels_the_same_participants_waiting_cycle() -> None:
    run = bobravoz_up(BARGE_IN)
    assert_story_summary(run)
    seen = [(r["meta:participant"], r["payload"]["text"]) for r in run.seen("replier")]
    # a1 waits in the debounce when alice speaks again (a2): cancelled. Bob's b1, waiting
    # too, is not alice's: kept. a3 comes after a2 was delivered: nothing left to cancel.
    assert seen == [("bob", "b1"), ("alice", "a2"), ("alice", "a3"), ("bob", "b2")], run.output
    assert run.filtered == {"cancelled": 1}, run.output


# --- a cyclic Story ---------------------------------------------------------------------


def test_a_cyclic_story_is_refused_with_its_cycle() -> None:
    done = subprocess.run(
        [*CLI, "up", str(FIXTURES / "cyclic.yaml"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=REPO,
    )
    assert done.returncode == 2, done
    assert "cycle: listen -> think -> speak -> listen" in done.stderr, done.stderr
    assert done.stdout == "", "nothing was started"


# --- the example Stories ----------------------------------------------------------------


VOICE_AGENT = EXAMPLES / "stories" / "voice-agent.yaml"


@pytest.fixture(scope="module")
def voice_run() -> UpRun:
    run = bobravoz_up(VOICE_AGENT, engrams=None)
    assert_story_summary(run)
    return run


def voice_script() -> Iterator[Any]:
    """The utterances voice-ingress speaks with the Story's config."""
    ingress = example_engram("voice-ingress")
    config = step_config(load_story(VOICE_AGENT), "ingress")
    yield from ingress.script(
        ingress.participant_names(config["participants"]),
        int(config["utterances"]),
        int(config["framesPerUtterance"]),
        int(config["pauseMs"]),
        int(config["bargeIns"]),
        int(config["bargeInFrames"]),
    )


def test_voice_agent_cancel_previous_answers_only_the_last_thing_said(voice_run: UpRun) -> None:
    plan = list(voice_script())
    # A barge-in follows its speaker's turn at once: the turn's transcript still waits in the
    # 300 ms debounce and is cancelled; every other transcript is answered.
    cancelled = [
        u.id
        for u, after in zip(plan, [*plan[1:], None], strict=True)
        if after and after.barge_in and after.participant == u.participant
    ]
    answered = [u.id for u in plan if u.id not in cancelled]
    ingress = voice_run.step("ingress")
    assert ingress["utterances"] == len(plan), voice_run.output
    assert voice_run.step("transcribe")["transcripts"] == len(plan)
    assert voice_run.filtered["cancelled"] == len(cancelled) == ingress["barge_ins"]
    respond = voice_run.step("respond")
    assert respond["replies"] == len(answered), voice_run.output
    # runtime: respond's inputs come from the transcript and the packet's participant.
    assert (respond["inputs_missing"], respond["prompt_mismatch"]) == (0, 0)
    playback = voice_run.step("playback")
    replied = [re.search(r"said (\S+) \(", text) for text in playback["texts"]]
    assert sorted(m.group(1) for m in replied if m) == sorted(answered), voice_run.output
    assert playback["played"] == playback["complete"] == len(answered) + 1  # + the greeting
    assert (playback["missing_frames"], playback["out_of_order"]) == (0, 0)


def test_voice_agent_greets_once_on_storyrun_ready(voice_run: UpRun) -> None:
    greet = voice_run.step("greet")
    assert (greet["greeted"], greet["ungated"]) == (1, 0), voice_run.output
    assert greet["hook_after_ms"] >= 0
    assert "Hello! How can I help you today?" in voice_run.step("playback")["texts"]
    # Every ingress packet (frames, end-of-utterance markers, the end marker) is held back
    # from greet by its `if`: the only `if` of the Story.
    assert voice_run.filtered["if_false"] == voice_run.step("ingress")["emitted"]
    assert set(voice_run.filtered) == {"if_false", "cancelled"}, voice_run.output


TRANSCRIPT_FANOUT = EXAMPLES / "stories" / "transcript-fanout.yaml"


def test_transcript_fanout_rules_and_quorum_join() -> None:
    config = step_config(load_story(TRANSCRIPT_FANOUT), "source")
    emitter = example_engram("text-emitter")
    items = [
        emitter.item(number, config["langs"], config["noisyEvery"])[1]
        for number in range(1, config["count"] + 1)
    ]
    english = [m for m in items if m["lang"] == "en"]
    noisy = Counter(m["lang"] for m in items if m["noisy"] == "true")
    run = bobravoz_up(TRANSCRIPT_FANOUT, engrams=None)
    assert_story_summary(run)
    # english-only: French items never reach translate; drop-noise: noisy items never reach
    # archive (by either branch); English items that are not noisy are joined there.
    joined = len(english) - noisy["en"]
    plain = len(items) - len(english) - noisy["fr"]
    assert run.filtered == {
        "not_allowed": len(items) - len(english),
        "rule_denied": noisy["en"] * 2 + noisy["fr"],
        "joined": joined,
    }, run.output
    assert run.step("translate")["translated"] == len(english)
    archive = run.step("archive")
    assert (archive["joined"], archive["plain"]) == (joined, plain), run.output
    assert (archive["partial"], archive["noisy"], archive["duplicates"]) == (0, 0, 0)
    assert run.counts["delivered"] == joined + plain
