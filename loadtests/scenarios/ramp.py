"""Ramp to saturation: add a producer/consumer pair every few seconds at a fixed rate each,
until p99 latency jumps or loss begins (the knee, read from the stats history)."""

from __future__ import annotations

import os

from locust import LoadTestShape, task

from loadtests.grpc_users import HubConsumer, HubProducer

STEP_SECONDS = float(os.environ.get("BOBRAVOZ_RAMP_STEP_SECONDS", "5"))
MAX_PAIRS = int(os.environ.get("BOBRAVOZ_RAMP_MAX_PAIRS", "12"))


class Producer(HubProducer):
    """One more each stage."""

    weight = 1

    @task
    def stream(self) -> None:
        self.run_stream()


class Consumer(HubConsumer):
    """Its pair."""

    weight = 1

    @task
    def stream(self) -> None:
        self.run_stream()


class Ramp(LoadTestShape):
    """Stage k (k = 1, 2, …) runs k pairs; stops after MAX_PAIRS stages."""

    def tick(self) -> tuple[int, float] | None:
        stage = int(self.get_run_time() // STEP_SECONDS) + 1
        if stage > MAX_PAIRS:
            return None
        return 2 * stage, 100.0
