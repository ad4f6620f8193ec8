"""The benchmark's baseline: the leanest relay of ``HubService.Process`` grpclib allows.

It routes like the hub, by binding headers: every stream of step ``producer`` of StoryRun
``namespace/name`` feeds the stream of step ``consumer`` of the same StoryRun (the edge of
``loadtests/bench_story.yaml``). It does nothing else: no handshake checks, no actors, no
validation, no buffering of its own, no accounting. Bytes move the cheapest way grpclib
permits: a producer's read takes everything buffered for the stream (:func:`read_chunk`), the
complete messages in it are found by their length prefixes and written to the consumer with
one HTTP/2 send; a partial message waits for the rest. Flow control is HTTP/2's own: a write
that waits for the consumer's window stops reading the producer. It runs on asyncio's default
loop and loads nothing of bobravoz's runtime; the hub's figures are reported as ratios of its.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import grpclib.const
import grpclib.server

from loadtests.benchwire import complete_frames, require_default_loop, tls_context
from loadtests.grpc_raw import METHOD, RawCodec, read_chunk, write_server

#: Which step's stream receives what a step's streams send.
ROUTES = {"producer": "consumer"}


class Outlet:
    """The consumer stream of one StoryRun step, once it is connected."""

    def __init__(self) -> None:
        self.stream: grpclib.server.Stream[Any, Any] | None = None
        self.connected = asyncio.Event()
        #: One writer at a time: a write may wait for window mid-message.
        self.lock = asyncio.Lock()


class Relay:
    """Forwards each producer's messages to its StoryRun's consumer stream, as raw bytes."""

    def __init__(self) -> None:
        self.outlets: dict[tuple[str, str, str], Outlet] = {}

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            METHOD: grpclib.const.Handler(
                self.process, grpclib.const.Cardinality.STREAM_STREAM, bytes, bytes
            )
        }

    def outlet(self, key: tuple[str, str, str]) -> Outlet:
        found = self.outlets.get(key)
        if found is None:
            found = self.outlets[key] = Outlet()
        return found

    async def process(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        metadata = stream.metadata or {}
        namespace = str(metadata.get("storyrun-namespace", ""))
        run = str(metadata.get("storyrun-name", ""))
        step = str(metadata.get("current-step-id", ""))
        await stream.send_initial_metadata()
        target = ROUTES.get(step)
        if target is None:
            await self.serve_outlet(stream, (namespace, run, step))
        else:
            await self.forward(stream, self.outlet((namespace, run, target)))

    async def serve_outlet(
        self, stream: grpclib.server.Stream[Any, Any], key: tuple[str, str, str]
    ) -> None:
        outlet = self.outlet(key)
        outlet.stream = stream
        outlet.connected.set()
        try:
            while await read_chunk(stream):
                pass  # a consumer sends nothing the relay needs
        finally:
            if self.outlets.get(key) is outlet:
                del self.outlets[key]

    async def forward(self, stream: grpclib.server.Stream[Any, Any], outlet: Outlet) -> None:
        await outlet.connected.wait()
        target = outlet.stream
        assert target is not None
        pending = b""
        while True:
            chunk = await read_chunk(stream)
            if not chunk:
                break
            data = pending + chunk if pending else chunk
            end, count = complete_frames(data)
            if count:
                async with outlet.lock:
                    await write_server(target, data[:end] if end < len(data) else data, count)
            pending = data[end:]
        # returning ends the call with OK once every complete message was relayed


async def main(host: str, port: int) -> None:
    require_default_loop()
    server = grpclib.server.Server([Relay()], codec=RawCodec())
    await server.start(host, port, ssl=tls_context("server"))
    bound = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    print(json.dumps({"event": "ready", "listen": f"{host}:{bound}"}), flush=True)
    await server.wait_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    require_default_loop()
    asyncio.run(main(args.host, args.port))
