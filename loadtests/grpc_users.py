"""Locust users that speak bobravoz's gRPC: hub producers/consumers and connector producers.

Locust runs on gevent, so the gRPC client here is **grpcio with its gevent integration**
(``grpc.experimental.gevent.init_gevent()``, called at import, before any channel exists):
grpcio's C core then cooperates with gevent's hub, a bidi call's request iterator can block
on a ``gevent.queue.Queue`` and its response iterator can be read from a greenlet. An
asyncio client (grpclib, our own bridge) cannot run inside a locust user, and a dedicated
thread with its own event loop would hand every packet across threads; grpcio under gevent
keeps one cooperative world, which is what locust's own gRPC example does.

Every packet sent is one locust request event (``send``) and every packet delivered is one
(``deliver``, response time = end-to-end latency from the send timestamp carried in the
payload), so locust's statistics, percentiles, failures and charts show the stream.

Users find the hub or connector from the environment the scenario runner sets:
``BOBRAVOZ_LOAD_HUB`` (``host:port``), ``BOBRAVOZ_LOAD_CONNECTORS`` (JSON list of
connector endpoints), and read their shape from ``BOBRAVOZ_LOAD_*`` variables (rate, size,
frame kind, producer and consumer steps).
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import time
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import gevent  # noqa: E402 - grpcio's gevent support must be initialised first
import gevent.event  # noqa: E402
import gevent.queue  # noqa: E402

# grpcio under gevent runs blocking work (name resolution, completion-queue polling) in
# gevent's thread pool; its default of 10 threads stalls calls beyond ~100 open streams.
gevent.get_hub().threadpool.maxsize = int(os.environ.get("BOBRAVOZ_LOAD_THREADS", "256"))
from locust import User, events  # noqa: E402

from bobravoz.protocol.gen.transport.v1 import ControlAction, ControlResponse  # noqa: E402
from bobravoz.protocol.packets import split_process_message, wrap_process_message  # noqa: E402
from bobravoz.protocol.wire import (  # noqa: E402
    PacketLayout,
    encode_len_field,
    encode_string_field,
    encode_varint_field,
    iter_fields,
)

PROCESS = "/transport.v1.HubService/Process"
DATA = "/transport.v1.TransportConnectorService/Data"
CONTROL = "/transport.v1.TransportConnectorService/Control"
HEADER = struct.Struct(">QQ")
_END = object()
#: Frame fields before the payload (protobuf accepts fields in any order).
BINARY_HEAD = encode_string_field(2, "application/octet-stream")
VIDEO_HEAD = (
    encode_string_field(2, "raw-yuv420")
    + encode_varint_field(3, 1024)
    + encode_varint_field(4, 512)
    + encode_varint_field(6, 1)
)
#: Per-message limit of the test channels: room for 1 MiB frames and their envelope.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]
_counters: dict[str, itertools.count[int]] = {}


_shared: dict[str, list[tuple[grpc.Channel, int]]] = {}
#: Streams per shared connection: HTTP/2 servers cap concurrent streams per connection
#: (grpclib's default is 100 per side), so many idle streams need several connections.
STREAMS_PER_CONNECTION = 40


class _SharedChannel:
    """A process-wide channel handed to many users; closing it is a no-op per user."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._channel = channel

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._channel.stream_stream(*args, **kwargs)

    def close(self) -> None:
        """Users share the connection: it closes with the process."""


def open_channel(target: str) -> Any:
    """A channel to ``target``: one per user, or one per process when
    ``BOBRAVOZ_LOAD_SHARED_CHANNEL=1`` (many idle streams multiplexed on few connections)."""
    if os.environ.get("BOBRAVOZ_LOAD_SHARED_CHANNEL") == "1":
        pool = _shared.setdefault(target, [])
        if not pool or pool[-1][1] >= STREAMS_PER_CONNECTION:
            pool.append((grpc.insecure_channel(target, options=CHANNEL_OPTIONS), 0))
        channel, streams = pool[-1]
        pool[-1] = (channel, streams + 1)
        return _SharedChannel(channel)
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)


def env_float(name: str, default: float) -> float:
    """A float from the scenario's environment."""
    return float(os.environ.get(name, default))


def next_index(key: str) -> int:
    """0, 1, 2, ... per ``key`` within this locust process: pairs producers with consumers."""
    return next(_counters.setdefault(key, itertools.count()))


def binding_headers(storyrun: str, step: str) -> list[tuple[str, str]]:
    """The Process handshake headers for ``step`` of ``storyrun``."""
    return [
        ("bubu-transport-protocol", "1.0.0"),
        ("storyrun-name", storyrun),
        ("storyrun-namespace", "default"),
        ("current-step-id", step),
        ("connector-generation", "1"),
    ]


def frame_payload(packet: bytes) -> bytes:
    """The payload of a DataPacket's binary (7) or video (6) frame, else empty."""
    for field in iter_fields(packet):
        if field.number in (6, 7):
            frame = packet[field.value_start : field.end]
            for inner in iter_fields(frame):
                if inner.number == 1:
                    return frame[inner.value_start : inner.end]
    return b""


def fire(
    kind: str,
    name: str,
    started: float,
    length: int,
    error: BaseException | None = None,
    response_time: float | None = None,
) -> None:
    """One locust request event."""
    events.request.fire(
        request_type=kind,
        name=name,
        response_time=(time.perf_counter() - started) * 1000
        if response_time is None
        else response_time,
        response_length=length,
        exception=error,
        context={},
    )


class BidiCall:
    """One long-lived bidi call: writes come from a gevent queue, a greenlet reads replies."""

    def __init__(
        self,
        channel: grpc.Channel,
        method: str,
        metadata: list[tuple[str, str]],
        on_message: Any,
        label: str,
    ) -> None:
        self.queue: gevent.queue.Queue[Any] = gevent.queue.Queue(maxsize=1024)
        self.label = label
        self.on_message = on_message
        self.call = channel.stream_stream(
            method, request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw
        )(self._requests(), metadata=metadata)
        self.reader = gevent.spawn(self._read)
        self.closed = False

    def _requests(self) -> Iterator[bytes]:
        # A send counts when grpcio takes the message, not when it is queued here.
        while True:
            item = self.queue.get()
            if item is _END:
                return
            message, name, begin = item
            yield message
            if name:
                fire("grpc-send", name, begin, len(message))

    def _read(self) -> None:
        started = time.perf_counter()
        try:
            for message in self.call:
                self.on_message(message)
        except grpc.RpcError as error:
            if not self.closed and error.code() != grpc.StatusCode.CANCELLED:
                fire("grpc-stream", f"{self.label}/broken", started, 0, error)

    def send(self, message: bytes, name: str = "") -> None:
        """Queue ``message``; blocks (cooperatively) while 1024 are already waiting. With a
        ``name``, a ``grpc-send`` event fires when grpcio takes it."""
        self.queue.put((message, name, time.perf_counter()))

    def close(self) -> None:
        """Let queued messages go (up to 5 s), half-close, give replies a moment, cancel.
        Messages still queued then are reported as failed sends."""
        self.closed = True
        deadline = time.perf_counter() + 5
        while not self.queue.empty() and time.perf_counter() < deadline:
            gevent.sleep(0.05)
        unsent = 0
        while not self.queue.empty():
            message, name, begin = self.queue.get_nowait()
            unsent += 1
            if name:
                fire("grpc-send", name, begin, len(message), RuntimeError("not sent by stop"))
        self.queue.put(_END)
        self.reader.join(timeout=2)
        self.call.cancel()


def make_payload(size: int, sequence: int) -> bytes:
    """``size`` bytes starting with the sequence number and the send time."""
    return HEADER.pack(sequence, time.time_ns()) + b"\x00" * max(0, size - HEADER.size)


class _Paced:
    """Sends at ``BOBRAVOZ_LOAD_RATE`` packets/s per user until the test stops."""

    rate = 10.0
    size = 256
    video = False

    def setup_shape(self) -> None:
        self.rate = env_float("BOBRAVOZ_LOAD_RATE", 10.0)
        self.size = int(env_float("BOBRAVOZ_LOAD_SIZE", 256))
        self.video = os.environ.get("BOBRAVOZ_LOAD_FRAME", "binary") == "video"
        self.sequence = 0
        self.started = time.perf_counter()

    def paced_for_a_second(self, send: Any) -> None:
        """Call ``send()`` on schedule for about one second, then return, so locust can stop
        the user promptly (a task is only interrupted between calls)."""
        until = time.perf_counter() + 1.0
        while time.perf_counter() < until:
            send()
            delay = self.started + self.sequence / self.rate - time.perf_counter()
            gevent.sleep(max(0.0, delay))

    def next_frame(self, layout: PacketLayout) -> bytes:
        """The next packet (``layout``'s field numbers) as bytes, built from wire pieces so
        the generator spends its CPU on sending, not on encoding."""
        self.sequence += 1
        body = make_payload(self.size, self.sequence)
        if self.video:
            frame = VIDEO_HEAD + encode_len_field(1, body)
            return encode_len_field(layout.number_of("video"), frame)
        frame = BINARY_HEAD + encode_len_field(1, body)
        return encode_len_field(layout.number_of("binary"), frame)


class HubProducer(_Paced, User):
    """Holds a ``Process`` stream as step ``producer`` of StoryRun ``load-<n>``; sends paced
    packets (request type ``grpc-send``)."""

    abstract = True

    def on_start(self) -> None:
        self.setup_shape()
        self.index = next_index("producer")
        self.channel = open_channel(os.environ["BOBRAVOZ_LOAD_HUB"])
        self.stream = BidiCall(
            self.channel,
            PROCESS,
            binding_headers(
                f"load-{self.index}", os.environ.get("BOBRAVOZ_LOAD_PRODUCER", "producer")
            ),
            lambda message: None,
            "Process",
        )

    def run_stream(self) -> None:
        """Send paced packets for about a second (locust calls it again)."""

        def send() -> None:
            packet = wrap_process_message(self.next_frame(PacketLayout.DATA_PACKET))
            self.stream.send(packet, "Process/send")

        self.paced_for_a_second(send)

    def on_stop(self) -> None:
        self.stream.close()
        self.channel.close()


class HubConsumer(User):
    """Holds a ``Process`` stream as a consumer step of StoryRun ``load-<n>``; each delivered
    packet is a ``grpc-deliver`` event whose response time is the end-to-end latency."""

    abstract = True
    steps: tuple[str, ...] = ("consumer",)

    def on_start(self) -> None:
        self.index = next_index("consumer")
        # Consumer n serves step n % len(steps) of StoryRun load-(n // len(steps)), so with
        # one step per StoryRun consumers pair with producers, and with k steps one producer
        # fans out to k consumers.
        steps = json.loads(os.environ.get("BOBRAVOZ_LOAD_CONSUMERS", '["consumer"]'))
        step = steps[self.index % len(steps)]
        storyrun = f"load-{self.index // len(steps)}"
        self.last_seen = time.perf_counter()
        self.channel = open_channel(os.environ["BOBRAVOZ_LOAD_HUB"])
        self.stream = BidiCall(
            self.channel, PROCESS, binding_headers(storyrun, step), self.delivered, "Process"
        )

    def delivered(self, message: bytes) -> None:
        now = time.time_ns()
        packet, _ = split_process_message(message)
        payload = frame_payload(packet or b"")
        if len(payload) < HEADER.size:
            return  # a heartbeat
        self.last_seen = time.perf_counter()
        _, sent_ns = HEADER.unpack_from(payload)
        fire(
            "grpc-deliver", "Process/deliver", 0, len(message), response_time=(now - sent_ns) / 1e6
        )

    def run_stream(self) -> None:
        """Deliveries arrive on the reader greenlet; the task only keeps the user alive."""
        gevent.sleep(1)

    def on_stop(self) -> None:
        # Drain what is in flight before closing: stop after one second of silence.
        deadline = time.perf_counter() + 10
        while time.perf_counter() < deadline and time.perf_counter() - self.last_seen < 1.0:
            gevent.sleep(0.1)
        self.stream.close()
        self.channel.close()


class ConnectorProducer(_Paced, User):
    """An engram's view: ``Control`` (waits for ``CONNECTOR_READY``) and ``Data`` on a
    connector, sending paced ``DataRequest`` packets (request type ``grpc-send``)."""

    abstract = True

    def on_start(self) -> None:
        self.setup_shape()
        self.index = next_index("connector-producer")
        endpoints = json.loads(os.environ["BOBRAVOZ_LOAD_CONNECTORS"])
        target = endpoints[self.index % len(endpoints)]
        self.channel = open_channel(target)
        protocol = [("bubu-transport-protocol", "1.0.0")]
        ready = gevent.event.Event()
        started = time.perf_counter()

        def on_control(message: bytes) -> None:
            if ControlResponse.parse(message).action == ControlAction.CONNECTOR_READY:
                ready.set()

        self.control = BidiCall(self.channel, CONTROL, protocol, on_control, "Control")
        if not ready.wait(timeout=30):
            fire("grpc-stream", "Control/ready", started, 0, TimeoutError("no CONNECTOR_READY"))
        else:
            fire("grpc-stream", "Control/ready", started, 0)
        self.data = BidiCall(self.channel, DATA, protocol, lambda message: None, "Data")

    def run_stream(self) -> None:
        """Send paced packets for about a second (locust calls it again)."""

        def send() -> None:
            packet = self.next_frame(PacketLayout.DATA_REQUEST)
            self.data.send(packet, "Data/send")

        self.paced_for_a_second(send)

    def on_stop(self) -> None:
        self.data.close()
        self.control.close()
        self.channel.close()
