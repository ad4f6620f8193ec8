"""Many idle streams: 500 producer/consumer pairs (1,000 open bindings), a trickle each."""

from locust import task

from loadtests.grpc_users import HubConsumer, HubProducer


class Producer(HubProducer):
    """One packet every few seconds."""

    fixed_count = 500

    @task
    def stream(self) -> None:
        self.run_stream()


class Consumer(HubConsumer):
    """Its pair."""

    fixed_count = 500

    @task
    def stream(self) -> None:
        self.run_stream()
