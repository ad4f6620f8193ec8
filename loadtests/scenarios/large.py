"""Large frames: 1 MiB raw video frames."""

from locust import task

from loadtests.grpc_users import HubConsumer, HubProducer


class Producer(HubProducer):
    """Sends 1 MiB video frames."""

    fixed_count = 2

    @task
    def stream(self) -> None:
        self.run_stream()


class Consumer(HubConsumer):
    """Receives them."""

    fixed_count = 2

    @task
    def stream(self) -> None:
        self.run_stream()
