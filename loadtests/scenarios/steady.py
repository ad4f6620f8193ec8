"""Steady state: N producers and N consumers at a fixed rate, one through a connector."""

from locust import task

from loadtests.grpc_users import ConnectorProducer, HubConsumer, HubProducer


class Producer(HubProducer):
    """Sends straight to the hub."""

    fixed_count = 2

    @task
    def stream(self) -> None:
        self.run_stream()


class EngramProducer(ConnectorProducer):
    """Sends through a connector's Data stream, as an engram does."""

    fixed_count = 1

    @task
    def stream(self) -> None:
        self.run_stream()


class Consumer(HubConsumer):
    """One consumer per StoryRun."""

    fixed_count = 3

    @task
    def stream(self) -> None:
        self.run_stream()
