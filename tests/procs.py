"""Starting bobravoz processes for integration tests: real processes, port 0, readiness lines."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from bobravoz.runtime.binding_envelope import BindingEnvelope, BindingInfo, encode_binding

REPO = Path(__file__).resolve().parent.parent
ENGRAMS = REPO / "examples" / "engrams"
CLI = [sys.executable, "-m", "bobravoz.sdk.cli"]
#: Seconds between two looks at state that announces no change (another process's metrics,
#: /proc, an object's counters). Only the wait's bound is a deadline; never an assertion.
POLL_INTERVAL = 0.05


@dataclass
class Proc:
    """A child process and the JSON lines it printed on stdout."""

    name: str
    process: trio.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    #: Every other line it printed on stdout (text), in order.
    text: list[str] = field(default_factory=list)
    #: Set (and replaced) on every new line, and set for good when the process has exited.
    changed: trio.Event = field(default_factory=trio.Event)

    def find(self, event: str) -> dict[str, Any] | None:
        """The last line whose ``event`` is ``event``."""
        for line in reversed(self.lines):
            if line.get("event") == event:
                return line
        return None

    async def wait_for(self, event: str, limit: float = 20.0) -> dict[str, Any]:
        """Wait for a line with ``event``; fail if the process exits first (or after ``limit``
        seconds). Wakes on each new line and on exit: no polling."""
        with trio.fail_after(limit):
            while (found := self.find(event)) is None:
                if self.process.returncode is not None:
                    raise AssertionError(f"{self.name} exited {self.process.returncode}")
                await self.changed.wait()
            return found


@dataclass
class Cluster:
    """Processes started by one test; all are killed when the test ends."""

    nursery: trio.Nursery
    scratch: Path
    procs: list[Proc] = field(default_factory=list)
    logs: list[Any] = field(default_factory=list)

    async def start(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str] | None = None,
        *,
        ready: bool = True,
    ) -> Proc:
        """Start a process; with ``ready`` wait for its JSON readiness line."""
        log = (self.scratch / f"{name.replace('/', '_')}.log").open("wb")
        self.logs.append(log)
        process = await trio.lowlevel.open_process(
            argv,
            env={**os.environ, "BOBRAVOZ_LOG_LEVEL": "INFO", **(env or {})},
            stdout=-1,
            stderr=log,
            stdin=-3,
            cwd=REPO,
        )
        proc = Proc(name, process)
        self.procs.append(proc)
        self.nursery.start_soon(_collect, proc)
        if ready:
            await proc.wait_for("ready")
        return proc

    async def hub(self, story: Path, env: Mapping[str, str] | None = None) -> Proc:
        """A hub on a free port with metrics."""
        return await self.start(
            "hub",
            [
                *CLI,
                "hub",
                "--listen",
                "127.0.0.1:0",
                "--story",
                str(story),
                "--metrics",
                "127.0.0.1:0",
            ],
            env,
        )

    async def connector(
        self,
        hub: Proc,
        step: str,
        *,
        storyrun: str = "run-1",
        namespace: str = "default",
        generation: int = 1,
        listen: str | None = None,
        upstream: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Proc:
        """A connector for ``step`` on a unix socket in the scratch folder (or ``listen``),
        linked to ``hub`` (or to ``upstream``: a peer connector, for P2P)."""
        return await self.start(
            f"connector-{step}",
            [*CLI, "connector"],
            {
                "BUBU_HUB_ENDPOINT": upstream or hub.find("ready")["listen"],  # type: ignore[index]
                "BUBU_STORYRUN_ID": storyrun,
                "BUBU_POD_NAMESPACE": namespace,
                "BUBU_STEP_NAME": step,
                "BUBU_CONNECTOR_GENERATION": str(generation),
                "BUBU_GRPC_LOCAL_ENDPOINT": listen or f"unix://{self.scratch}/{step}.sock",
                "BOBRAVOZ_METRICS_LISTEN": "127.0.0.1:0",
                "BUBU_GRPC_RECONNECT_BASE_BACKOFF": "100ms",
                "BUBU_GRPC_RECONNECT_MAX_BACKOFF": "1s",
                **(env or {}),
            },
        )

    async def engram(
        self,
        connector: Proc,
        step: str,
        program: str,
        config: Mapping[str, Any],
        env: Mapping[str, str] | None = None,
    ) -> Proc:
        """An example engram program bound to ``connector`` (``env`` added to its own)."""
        binding = BindingEnvelope(
            name=f"run-1-{step}-transport",
            namespace="default",
            info=BindingInfo(endpoint=connector.find("ready")["listen"]),  # type: ignore[index]
        )
        return await self.start(
            f"engram-{step}",
            [sys.executable, str(ENGRAMS / f"{program}.py")],
            {
                "BUBU_TRANSPORT_BINDING": encode_binding(binding),
                "BUBU_STEP_NAME": step,
                "BUBU_STORYRUN_ID": "run-1",
                "BUBU_POD_NAMESPACE": "default",
                "BUBU_STEP_CONFIG": json.dumps(dict(config)),
                **(env or {}),
            },
            ready=False,
        )


async def _collect(proc: Proc) -> None:
    stream = proc.process.stdout
    assert stream is not None
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        while b"\n" in buffer:
            raw, buffer = buffer.split(b"\n", 1)
            try:
                line = json.loads(raw)
            except ValueError:
                proc.text.append(raw.decode(errors="replace"))
                continue
            if isinstance(line, dict):
                proc.lines.append(line)
                proc.changed.set()
                proc.changed = trio.Event()
    await proc.process.wait()
    proc.changed.set()


@asynccontextmanager
async def open_cluster(scratch: Path) -> AsyncIterator[Cluster]:
    """A place to start processes; every one still running is stopped on exit."""
    async with trio.open_nursery() as nursery:
        cluster = Cluster(nursery, scratch)
        try:
            yield cluster
        finally:
            with trio.CancelScope(shield=True):
                for proc in cluster.procs:
                    if proc.process.returncode is None:
                        proc.process.send_signal(signal.SIGTERM)
                with trio.move_on_after(5):
                    for proc in cluster.procs:
                        await proc.process.wait()
                for proc in cluster.procs:
                    if proc.process.returncode is None:
                        proc.process.kill()
                        await proc.process.wait()
                for log in cluster.logs:
                    log.close()
            nursery.cancel_scope.cancel()


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at ``http://address/metrics``, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(
    samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(
        value
        for (sample_name, sample_labels), value in samples.items()
        if sample_name == name and set(labels.items()) <= set(sample_labels)
    )


async def wait_for_metric(
    address: str,
    name: str,
    value: float,
    *,
    limit: float = 10.0,
    at_least: bool = False,
    **labels: str,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scrape ``address`` until metric ``name`` (with ``labels``) equals ``value`` (or reaches
    it, with ``at_least``); return the last scrape. Fails the test after ``limit`` seconds.

    Another process's counters announce no change, so this is a bounded poll of real state:
    the value it waits for is the proof, never the time it took."""
    with trio.fail_after(limit):
        while True:
            samples = await trio.to_thread.run_sync(scrape, address)
            current = metric(samples, name, **labels)
            if current == value or (at_least and current >= value):
                return samples
            await trio.sleep(POLL_INTERVAL)


async def eventually(
    condition: Callable[[], bool],
    limit: float = 15.0,
    *,
    wake: Callable[[], trio.Event] | None = None,
) -> None:
    """Wait until ``condition()`` holds; fail the test after ``limit`` seconds.

    With ``wake`` (returns the event set when the state ``condition`` reads may have changed,
    e.g. ``lambda: fake.changed``) it re-checks on that event only. Without one, the state
    announces nothing, and it is a bounded poll of that state every ``POLL_INTERVAL``."""
    with trio.fail_after(limit):
        while not condition():
            if wake is not None:
                await wake().wait()
            else:
                await trio.sleep(POLL_INTERVAL)


async def sigterm_twice(proc: Proc, log: Path, first_stage: str) -> str:
    """SIGTERM ``proc``, wait for ``first_stage`` in its ``log`` (it is draining), SIGTERM it
    again: it must exit 130 within 10 s (not its grace), say so, and raise nothing. Returns
    the log's text."""
    proc.process.send_signal(signal.SIGTERM)
    await eventually(lambda: first_stage in log.read_text())
    proc.process.send_signal(signal.SIGTERM)
    with trio.fail_after(10):
        assert await proc.process.wait() == 130
    text = await trio.Path(log).read_text()
    assert "received SIGTERM again: stopping at once" in text, text[-2000:]
    assert "Traceback" not in text, text[-3000:]
    return text
