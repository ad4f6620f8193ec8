"""Fan-out 1 → 10: one producer, ten consumer steps of the same StoryRun."""

from locust import task

from loadtests.grpc_users import HubConsumer, HubProducer


class Producer(HubProducer):
    """The single source."""

    fixed_count = 1

    @task
    def stream(self) -> None:
        self.run_stream()


class Consumer(HubConsumer):
    """sink-0 … sink-9."""

    fixed_count = 10

    @task
    def stream(self) -> None:
        self.run_stream()
