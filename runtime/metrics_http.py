"""A small trio HTTP endpoint for ``/metrics`` (Prometheus text format), ``/healthz``, ``/readyz``.

It answers GET requests only, one request per connection, from tasks in the caller's nursery
(prometheus-client's own server would start an unsupervised thread).
"""

from __future__ import annotations

from collections.abc import Callable

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from bobravoz.runtime.endpoints import Endpoint

_MAX_REQUEST = 16 * 1024


async def serve_metrics(
    endpoint: Endpoint,
    registry: CollectorRegistry,
    *,
    ready: Callable[[], bool] = lambda: True,
    task_status: trio.TaskStatus[Endpoint] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve metrics and health on ``endpoint`` (port 0 picks one) until cancelled.

    ``task_status.started`` receives the bound endpoint. ``/readyz`` answers 503 while
    ``ready()`` is false.
    """
    listeners = await trio.open_tcp_listeners(endpoint.port, host=endpoint.host)
    port = int(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            with trio.move_on_after(5):
                while b"\r\n\r\n" not in request and len(request) < _MAX_REQUEST:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    request += chunk
            method, _, rest = request.partition(b" ")
            path = rest.partition(b" ")[0].split(b"?")[0]
            if method != b"GET":
                status, body, kind = "405 Method Not Allowed", b"GET only\n", "text/plain"
            elif path == b"/metrics":
                status, body, kind = "200 OK", generate_latest(registry), CONTENT_TYPE_LATEST
            elif path == b"/healthz":
                status, body, kind = "200 OK", b"ok\n", "text/plain"
            elif path == b"/readyz":
                is_ready = ready()
                status = "200 OK" if is_ready else "503 Service Unavailable"
                body, kind = (b"ready\n" if is_ready else b"not ready\n"), "text/plain"
            else:
                status, body, kind = "404 Not Found", b"not found\n", "text/plain"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            try:
                await stream.send_all(head + body)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    async with trio.open_nursery() as nursery:
        task_status.started(Endpoint(host=endpoint.host, port=port))
        await trio.serve_listeners(handle, listeners, handler_nursery=nursery)
