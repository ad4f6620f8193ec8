"""A stand-in Kubernetes API server for controller tests (no API server runs on these machines).

It speaks the real REST and watch protocol over HTTP/1.1 on loopback: lists carry a
``resourceVersion``; ``?watch=true`` streams chunked JSON events (ADDED, MODIFIED, DELETED,
BOOKMARK) from a given version, or an ERROR 410 Gone when that version was compacted away;
PATCH and PUT honour ``metadata.resourceVersion`` preconditions with 409 Conflict; the
``status`` subresource, Events and coordination Leases are served. Tests script faults:
``conflicts`` (answer the next N writes with 409), :meth:`compact` (old versions become
410), :meth:`drop_watches` (cut open watch streams).
"""

from __future__ import annotations

import copy
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import trio

_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<namespace>[^/]+))?/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>status))?$"
)


@dataclass
class FakeKube:
    """The server's state and fault scripts."""

    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    log: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)
    version: int = 100
    compacted: int = 0
    conflicts: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)
    drop: trio.Event = field(default_factory=trio.Event)
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Set (and replaced) on every request the server receives.
    requested: trio.Event = field(default_factory=trio.Event)

    def _bump(self) -> int:
        self.version += 1
        return self.version

    def put(self, resource: str, obj: dict[str, Any], kind: str = "MODIFIED") -> dict[str, Any]:
        """Store ``obj`` (a new resourceVersion) and notify watches of ``resource``."""
        meta = obj.setdefault("metadata", {})
        key = (resource, meta.get("namespace", ""), meta["name"])
        if key not in self.objects and kind == "MODIFIED":
            kind = "ADDED"
        meta["resourceVersion"] = str(self._bump())
        self.objects[key] = copy.deepcopy(obj)
        self.log.append((self.version, resource, kind, copy.deepcopy(obj)))
        self.changed.set()
        self.changed = trio.Event()
        return obj

    def delete(self, resource: str, namespace: str, name: str) -> None:
        """Remove an object and notify watches."""
        obj = self.objects.pop((resource, namespace, name))
        obj["metadata"]["resourceVersion"] = str(self._bump())
        self.log.append((self.version, resource, "DELETED", obj))
        self.changed.set()
        self.changed = trio.Event()

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of a stored object, or None."""
        found = self.objects.get((resource, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def record(self, method: str, target: str) -> None:
        """Log one request and wake :meth:`wait_for_request`."""
        self.requests.append((method, target))
        self.requested.set()
        self.requested = trio.Event()

    async def wait_for_request(self, method: str, path: str) -> tuple[str, str]:
        """The first logged request with ``method`` whose target contains ``path``; waits for
        it to arrive if there is none yet (bound the wait with ``trio.fail_after``)."""
        while True:
            for request in self.requests:
                if request[0] == method and path in request[1]:
                    return request
            await self.requested.wait()

    def compact(self) -> None:
        """Forget history: watches from any version up to now get 410 Gone."""
        self.compacted = self.version

    def drop_watches(self) -> None:
        """Cut every open watch stream (clients must reconnect)."""
        self.drop.set()
        self.drop = trio.Event()


def _resource(match: re.Match[str]) -> str:
    group = match["group"] or ""
    version = match["core"] or match["version"]
    return f"{group}/{version}/{match['plural']}"


async def _send(stream: trio.SocketStream, status: int, body: Any) -> None:
    payload = json.dumps(body).encode()
    reason = {
        200: "OK",
        201: "Created",
        404: "Not Found",
        409: "Conflict",
        410: "Gone",
        400: "Bad Request",
    }.get(status, "Error")
    await stream.send_all(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


async def _watch(
    fake: FakeKube,
    stream: trio.SocketStream,
    resource: str,
    namespace: str | None,
    query: dict[str, str],
) -> None:
    start = int(query.get("resourceVersion") or fake.version)
    timeout = float(query.get("timeoutSeconds", "30"))
    await stream.send_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )

    async def chunk(event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        await stream.send_all(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    if start < fake.compacted:
        await chunk(
            {
                "type": "ERROR",
                "object": _status(410, "Expired", f"too old resource version: {start}"),
            }
        )
        await stream.send_all(b"0\r\n\r\n")
        return
    sent = start
    drop = fake.drop
    with trio.move_on_after(timeout):
        while True:
            for version, kind_resource, kind, obj in list(fake.log):
                if version <= sent or kind_resource != resource:
                    continue
                if namespace and obj["metadata"].get("namespace") != namespace:
                    continue
                await chunk({"type": kind, "object": obj})
                sent = version
            if query.get("allowWatchBookmarks") == "true":
                await chunk(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": "Bookmark",
                            "metadata": {"resourceVersion": str(fake.version)},
                        },
                    }
                )
                sent = max(sent, fake.version)
            changed = fake.changed
            with trio.move_on_after(0.5):
                async with trio.open_nursery() as nursery:

                    async def wait_drop() -> None:
                        await drop.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(wait_drop)
                    await changed.wait()
                    nursery.cancel_scope.cancel()
            if drop.is_set():
                # Cut without the final chunk: the client sees a broken stream.
                raise trio.BrokenResourceError("watch dropped by the test")
    await stream.send_all(b"0\r\n\r\n")


async def _serve(fake: FakeKube, stream: trio.SocketStream) -> bool:
    """Answer one request; False when the client closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return False
        data += chunk
    await _answer(fake, stream, data)
    return True


async def _answer(fake: FakeKube, stream: trio.SocketStream, data: bytes) -> None:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        body += await stream.receive_some(65536)
    url = urllib.parse.urlsplit(target)
    query = dict(urllib.parse.parse_qsl(url.query))
    fake.record(method, target)
    match = _PATH.match(url.path)
    if match is None:
        await _send(stream, 404, _status(404, "NotFound", url.path))
        return
    resource = _resource(match)
    namespace, name, sub = match["namespace"], match["name"], match["sub"]
    if method == "GET" and name is None:
        if query.get("watch") in {"true", "1"}:
            await _watch(fake, stream, resource, namespace, query)
            return
        items = [
            copy.deepcopy(obj)
            for (r, ns, _), obj in sorted(fake.objects.items())
            if r == resource and (namespace is None or ns == namespace)
        ]
        await _send(
            stream,
            200,
            {
                "kind": "List",
                "apiVersion": "v1",
                "items": items,
                "metadata": {"resourceVersion": str(fake.version)},
            },
        )
        return
    if method == "POST" and name is None:
        obj = json.loads(body)
        obj.setdefault("metadata", {}).setdefault("namespace", namespace or "")
        if match["plural"] == "events":
            fake.events.append(obj)
            obj.setdefault("metadata", {}).setdefault("name", f"event-{len(fake.events)}")
        if fake.get(resource, namespace or "", obj["metadata"]["name"]) is not None:
            await _send(stream, 409, _status(409, "AlreadyExists", obj["metadata"]["name"]))
            return
        await _send(stream, 201, fake.put(resource, obj, "ADDED"))
        return
    current = fake.get(resource, namespace or "", name or "")
    if current is None:
        await _send(stream, 404, _status(404, "NotFound", f"{resource} {namespace}/{name}"))
        return
    if method == "GET":
        await _send(stream, 200, current)
        return
    update = json.loads(body)
    wanted = update.get("metadata", {}).get("resourceVersion")
    if fake.conflicts > 0 or (wanted and wanted != current["metadata"]["resourceVersion"]):
        fake.conflicts = max(0, fake.conflicts - 1)
        await _send(stream, 409, _status(409, "Conflict", "the object has been modified"))
        return
    if method == "PUT":
        result = update
        if sub == "status":
            result = {**current, "status": update.get("status", {})}
    else:
        result = _merge(current, update if sub != "status" else {"status": update.get("status")})
    await _send(stream, 200, fake.put(resource, result))


async def serve_fake_kube(
    fake: FakeKube, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``fake`` on a free loopback port; ``task_status`` gets ``http://127.0.0.1:PORT``."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                while await _serve(fake, stream):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
                return

    async with trio.open_nursery() as nursery:
        task_status.started(f"http://127.0.0.1:{port}")
        await trio.serve_listeners(handle, listeners, handler_nursery=nursery)
