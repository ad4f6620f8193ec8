"""``make soak``: one hub under StoryRun churn and consumer cutovers, checked for leaks and loss.

Scope: the hub as the controller runs it (``serve_hub`` in cluster mode, topologies changed only
through a :class:`TopologyFeed`), in this process, with grpclib clients over loopback. After a
warm-up, ``--runs`` StoryRuns each get a topology through the feed (``feed.set``), carry
traffic (a consumer stream and a producer stream open, one packet goes through, both close)
and are removed (``feed.remove``), ``--concurrency`` at a time; then ``--cutovers`` times a
consumer is replaced by connector generation 2 while the producer is still sending, and both
generations together must get every packet once, in order.

Printed before and after (``gc.collect()`` first): the process's RSS (``VmRSS``), live
bindings, open streams, binding-labelled series (``TransportMetrics.series()``) and samples in
a real ``/metrics`` scrape. Exits 1 when bindings or streams are left at the end, RSS grew more
than 10 % over the post-warm-up start, the series or samples grew, or any packet was lost or
misdelivered. Not part of ``make test``: the full run takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import itertools
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import trio
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from bobravoz.protocol.constants import PROCESS_METHOD
from bobravoz.protocol.gen.transport.v1 import BinaryFrame, DataPacket, ProcessRequest
from bobravoz.protocol.packets import is_heartbeat, read_envelope, split_process_message
from bobravoz.protocol.wire import PacketLayout
from bobravoz.runtime.endpoints import Endpoint
from bobravoz.runtime.grpc_bridge import (
    GrpcChannel,
    open_grpc_channel,
    open_grpc_loop,
)
from bobravoz.runtime.handshake import BindingIdentity
from bobravoz.runtime.hub import HubSettings, TopologyFeed, TopologyRegistry, serve_hub
from bobravoz.runtime.metrics import TransportMetrics
from bobravoz.runtime.metrics_http import serve_metrics
from bobravoz.runtime.status import RemoteStatusError, StatusCode
from bobravoz.runtime.story import parse_story
from bobravoz.runtime.topology import Topology, streaming_topology

NAMESPACE = "soak"
DATA = PacketLayout.DATA_PACKET
#: What one run or cutover may fail with; it is counted and the soak goes on.
FAILURES = (trio.TooSlowError, RemoteStatusError, trio.BrokenResourceError, ExceptionGroup)
#: Packets per cutover; half before generation 2 connects, half while it does.
CUTOVER_PACKETS = 40

STORY = """
metadata: {name: soak, namespace: soak}
spec:
  pattern: realtime
  steps:
    - {name: src, ref: {name: e}}
    - {name: sink, ref: {name: e}, needs: [src]}
"""


def headers(run: str, step: str, generation: int = 1) -> dict[str, str]:
    return BindingIdentity(
        storyrun=run, namespace=NAMESPACE, step=step, generation=generation
    ).headers()


REQUEST = bytes(ProcessRequest(packet=DataPacket(binary=BinaryFrame(payload=b"s" * 128))))


def sequences(messages: Iterable[bytes]) -> list[int]:
    """The hub-stamped sequence of each data packet in ``messages`` (heartbeats left out)."""
    found: list[int] = []
    for message in messages:
        packet, _flow = split_process_message(message)
        if packet is None or is_heartbeat(packet, DATA):
            continue
        envelope = read_envelope(packet, DATA)
        found.append(envelope.sequence if envelope is not None else -1)
    return found


async def poll(condition: Callable[[], bool], interval: float = 0.001) -> None:
    """Return once ``condition()`` holds, checking every ``interval`` seconds (the caller
    bounds the wait)."""
    for _ in itertools.count():
        if condition():
            return
        await trio.sleep(interval)


def rss_kib() -> int:
    """This process's resident set size in KiB (``VmRSS`` in /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def scrape_samples(address: str) -> int:
    """How many samples a real ``/metrics`` scrape of ``address`` returns."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(len(family.samples) for family in text_string_to_metric_families(text))


@dataclass(frozen=True)
class Figures:
    rss_kib: int
    live_bindings: int
    open_streams: int
    series: int
    samples: int
    timers: int

    def line(self, label: str) -> str:
        return (
            f"{label:34s} rss {self.rss_kib / 1024:7.1f} MiB"
            f" | live bindings {self.live_bindings:5d}"
            f" | open streams {self.open_streams:4d} | binding series {self.series:5d}"
            f" | /metrics samples {self.samples:5d} | asyncio timers {self.timers:6d}"
        )


@dataclass
class Tally:
    """What went through and what went wrong (the first few failures are kept verbatim)."""

    runs: int = 0
    cutovers: int = 0
    failures: list[str] = field(default_factory=list)
    failed: int = 0

    def fail(self, what: str) -> None:
        self.failed += 1
        if len(self.failures) < 10:
            self.failures.append(what)


@dataclass
class Soak:
    feed: TopologyFeed
    registry: TopologyRegistry
    metrics: TransportMetrics
    metrics_address: str
    hub: Endpoint
    topology: Topology
    tally: Tally = field(default_factory=Tally)

    def pod(self) -> AbstractAsyncContextManager[GrpcChannel]:
        """A connection of its own, as each step's connector pod has."""
        return open_grpc_channel(self.hub)

    async def measure(self) -> Figures:
        gc.collect()
        live = self.metrics.live_bindings
        return Figures(
            rss_kib=rss_kib(),
            live_bindings=live() if live is not None else -1,
            open_streams=self.metrics.open_streams(),
            series=self.metrics.series(),
            samples=await trio.to_thread.run_sync(scrape_samples, self.metrics_address),
            timers=len(getattr(asyncio.get_event_loop(), "_timers", ())),
        )

    async def applied(self, run: str, present: bool) -> None:
        """Wait until the hub applied the feed's change for ``run`` (bounded poll)."""
        with trio.fail_after(10):
            await poll(lambda: (self.registry.lookup(NAMESPACE, run) is not None) == present)

    async def one_run(self, index: int) -> None:
        """A StoryRun's whole life: topology in, one packet through, topology out."""
        run = f"run-{index}"
        await self.feed.set(NAMESPACE, run, self.topology)
        await self.applied(run, present=True)
        try:
            with trio.fail_after(10):
                async with (
                    self.pod() as consumer_pod,
                    self.pod() as producer_pod,
                    consumer_pod.open_stream(PROCESS_METHOD, headers(run, "sink")) as sink,
                    producer_pod.open_stream(PROCESS_METHOD, headers(run, "src")) as src,
                ):
                    await src.send(REQUEST)
                    got: list[int] = []
                    while not got:
                        got.extend(sequences(await sink.receive_batch()))
                    if got != [1]:
                        self.tally.fail(f"{run}: received sequences {got}, expected [1]")
        except FAILURES as error:
            self.tally.fail(f"{run}: {error!r}")
        await self.feed.remove(NAMESPACE, run)
        self.tally.runs += 1

    async def one_cutover(self, index: int) -> None:
        """A consumer replaced by generation 2 while the producer sends; check the union."""
        run = f"cut-{index}"
        total = CUTOVER_PACKETS
        await self.feed.set(NAMESPACE, run, self.topology)
        await self.applied(run, present=True)
        old: list[int] = []
        new: list[int] = []
        ended: list[RemoteStatusError | None] = []
        try:
            with trio.fail_after(15):
                async with (
                    self.pod() as old_pod,
                    self.pod() as producer_pod,
                    self.pod() as new_pod,
                    old_pod.open_stream(PROCESS_METHOD, headers(run, "sink", 1)) as first,
                    producer_pod.open_stream(PROCESS_METHOD, headers(run, "src")) as src,
                    trio.open_nursery() as nursery,
                ):
                    cutting = trio.Event()
                    complete = trio.Event()

                    def check() -> None:
                        if ended and len(old) + len(new) >= total:
                            complete.set()

                    async def produce() -> None:
                        for number in range(total):
                            if number == total // 2:
                                await cutting.wait()
                            await src.send(REQUEST)

                    async def old_to_its_end() -> None:
                        try:
                            while True:
                                old.extend(sequences(await first.receive_batch()))
                        except RemoteStatusError as status:
                            ended.append(status)
                        except (trio.EndOfChannel, trio.BrokenResourceError):
                            ended.append(None)
                        check()

                    nursery.start_soon(produce)
                    while len(old) < total // 4:
                        old.extend(sequences(await first.receive_batch()))
                    nursery.start_soon(old_to_its_end)
                    cutting.set()
                    async with new_pod.open_stream(
                        PROCESS_METHOD, headers(run, "sink", 2)
                    ) as second:

                        async def new_generation() -> None:
                            while True:
                                new.extend(sequences(await second.receive_batch()))
                                check()

                        nursery.start_soon(new_generation)
                        await complete.wait()
                        nursery.cancel_scope.cancel()
        except FAILURES as error:
            self.tally.fail(f"{run}: {error!r} (old {len(old)}, new {len(new)})")
        else:
            if not ended or ended[0] is None or ended[0].code != StatusCode.ABORTED:
                self.tally.fail(f"{run}: generation 1 ended with {ended}")
            if old != list(range(1, len(old) + 1)) or new != list(range(len(old) + 1, total + 1)):
                self.tally.fail(f"{run}: generation 1 got {old}, generation 2 got {new}")
        await self.feed.remove(NAMESPACE, run)
        self.tally.cutovers += 1

    async def churn(
        self, job: Callable[[int], Awaitable[None]], indices: range, concurrency: int, label: str
    ) -> float:
        """Run ``job`` for every index, ``concurrency`` at a time; return the seconds taken."""
        started = time.monotonic()
        pending = iter(indices)
        report_every = max(1, len(indices) // 10)

        async def worker() -> None:
            for index in pending:
                await job(index)
                done = index - indices.start + 1
                if done % report_every == 0:
                    print(
                        f"  {label}: {done}/{len(indices)} "
                        f"({time.monotonic() - started:.0f} s, {self.tally.failed} failed)",
                        flush=True,
                    )

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        return time.monotonic() - started

    async def quiesce(self) -> bool:
        """Wait (up to 30 s) for the feed to be applied and every stream and binding gone."""
        live = self.metrics.live_bindings
        with trio.move_on_after(30):
            await poll(
                lambda: not (len(self.registry) or self.metrics.open_streams() or (live and live()))
            )
            return True
        return False


@asynccontextmanager
async def open_soak() -> AsyncIterator[Soak]:
    """A hub in cluster mode fed by a TopologyFeed, and its /metrics."""
    registry = TopologyRegistry()
    feed = TopologyFeed()
    prometheus = CollectorRegistry()
    metrics = TransportMetrics(prometheus, component="hub")
    settings = HubSettings(heartbeat_interval=600.0)
    loopback = Endpoint(host="127.0.0.1", port=0)
    async with open_grpc_loop(), trio.open_nursery() as nursery:
        hub = await nursery.start(
            functools.partial(serve_hub, feed=feed), loopback, registry, metrics, settings
        )
        scrape_at = await nursery.start(serve_metrics, loopback, prometheus)
        print(f"hub (cluster mode, TopologyFeed) on {hub}, /metrics on {scrape_at}", flush=True)
        yield Soak(
            feed=feed,
            registry=registry,
            metrics=metrics,
            metrics_address=str(scrape_at),
            hub=hub,
            topology=streaming_topology(parse_story(STORY)),
        )
        nursery.cancel_scope.cancel()


async def soak(args: argparse.Namespace) -> int:
    async with open_soak() as run:
        print((await run.measure()).line("before warm-up"), flush=True)
        await run.churn(run.one_run, range(args.warmup), args.concurrency, "warm-up")
        if not await run.quiesce():
            print("warm-up left streams or bindings behind", flush=True)
        start = await run.measure()
        print(start.line(f"start (after {args.warmup} warm-up runs)"), flush=True)
        first = args.warmup
        seconds = await run.churn(
            run.one_run, range(first, first + args.runs), args.concurrency, "runs"
        )
        print(f"{args.runs} StoryRuns in {seconds:.1f} s ({args.runs / seconds:.0f}/s)")
        seconds = await run.churn(
            run.one_cutover, range(args.cutovers), max(1, args.concurrency // 2), "cutovers"
        )
        print(f"{args.cutovers} cutovers in {seconds:.1f} s", flush=True)
        quiet = await run.quiesce()
        end = await run.measure()
        print(start.line("start"))
        print(end.line("end"))
        released = run.metrics.bindings.get("(released)")
        lost = run.metrics.total_lost()
        dropped = run.metrics.total_dropped()
        print(
            f"packets: in {released.packets_in if released else 0}, "
            f"out {released.packets_out if released else 0}, lost {lost}, dropped {dropped}; "
            f"runs {run.tally.runs}, cutovers {run.tally.cutovers}, failed {run.tally.failed}"
        )
        for failure in run.tally.failures:
            print(f"  failure: {failure}")
        growth = end.rss_kib / start.rss_kib - 1
        problems = []
        if not quiet or end.live_bindings or end.open_streams:
            problems.append(
                f"left behind: {end.live_bindings} live bindings, {end.open_streams} open streams"
            )
        if end.rss_kib > 1.10 * start.rss_kib:
            problems.append(f"RSS grew {growth:+.1%} (limit +10 %)")
        if end.series > start.series or end.samples > start.samples:
            problems.append(
                f"series grew: {start.series} -> {end.series} binding series, "
                f"{start.samples} -> {end.samples} /metrics samples"
            )
        if lost or dropped or run.tally.failed:
            problems.append(f"{lost} lost, {dropped} dropped, {run.tally.failed} failed")
        print(f"RSS {growth:+.1%} over the start")
        if problems:
            print("FAIL: " + "; ".join(problems))
            return 1
        print("PASS")
        return 0


def main() -> int:
    """Parse the options and run the soak."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="StoryRuns after the warm-up")
    parser.add_argument("--cutovers", type=int, default=1_000)
    parser.add_argument(
        "--warmup",
        type=int,
        default=2000,
        help="StoryRuns before the start is measured (RSS settles after about 2,000)",
    )
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    return trio.run(soak, args)


if __name__ == "__main__":
    sys.exit(main())
