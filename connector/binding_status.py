"""The connector's report on its TransportBinding: ``Ready``, a heartbeat, negotiated codecs.

A status merge-patch through the Kubernetes API with the pod's service-account token (or, for
local runs and tests, the URL in ``BOBRAVOZ_KUBE_API``). The connector speaks plain HTTPS here
rather than the kubernetes client: the client stays in the controllers (an import contract).
Reporting is best effort: a failed patch is logged and retried at the next heartbeat, and
never touches the data path.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, final

import trio

from bobravoz.protocol.wire import PacketLayout, iter_fields

log = logging.getLogger(__name__)

TOKEN_PATH: Final = "/var/run/secrets/kubernetes.io/serviceaccount/token"
CA_PATH: Final = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


@final
@dataclass
class Negotiated:
    """What the connector has seen pass: the first codec or MIME type of each lane."""

    audio: dict[str, Any] | None = None
    video: dict[str, Any] | None = None
    binary: str | None = None
    changed: bool = False

    def observe(self, packet: bytes, layout: PacketLayout) -> None:
        """Record the frame of ``packet`` if its lane has nothing recorded yet."""
        audio_n, video_n, binary_n = layout.value[4:7]
        for top in iter_fields(packet):
            if top.number not in (audio_n, video_n, binary_n):
                continue
            frame = packet[top.value_start : top.end]
            fields = {f.number: frame[f.value_start : f.end] for f in iter_fields(frame)}
            if top.number == binary_n and self.binary is None:
                self.binary = fields.get(2, b"").decode() or "application/octet-stream"
                self.changed = True
            elif top.number == audio_n and self.audio is None:
                self.audio = {"name": fields.get(4, b"").decode() or "pcm16"}
                self.changed = True
            elif top.number == video_n and self.video is None:
                self.video = {"name": fields.get(2, b"").decode() or "h264"}
                self.changed = True


@final
@dataclass
class StatusReporter:
    """Patches one TransportBinding's status (see the module docstring)."""

    api: str
    namespace: str
    name: str
    token: str | None = None
    context: ssl.SSLContext | None = None
    negotiated: Negotiated = field(default_factory=Negotiated)

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str], namespace: str, name: str
    ) -> StatusReporter | None:
        """A reporter when an API is reachable (explicit URL or in-cluster), else None."""
        explicit = environ.get("BOBRAVOZ_KUBE_API", "").strip()
        if explicit:
            return cls(explicit.rstrip("/"), namespace, name)
        host = environ.get("KUBERNETES_SERVICE_HOST")
        if not host or not os.path.exists(TOKEN_PATH):
            return None
        port = environ.get("KUBERNETES_SERVICE_PORT", "443")
        with open(TOKEN_PATH) as token:
            bearer = token.read().strip()
        context = ssl.create_default_context(cafile=CA_PATH)
        return cls(f"https://{host}:{port}", namespace, name, bearer, context)

    def _patch(self, status: dict[str, Any]) -> None:
        url = (
            f"{self.api}/apis/transport.bubustack.io/v1alpha1/namespaces/{self.namespace}"
            f"/transportbindings/{self.name}/status"
        )
        headers = {"Content-Type": "application/merge-patch+json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        body = json.dumps({"status": status}).encode()
        request = urllib.request.Request(url, data=body, headers=headers, method="PATCH")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10, context=self.context):  # noqa: S310
            pass

    async def report(self, *, ready: bool, message: str) -> None:
        """Send Ready and anything newly negotiated. The Ready condition's
        ``lastTransitionTime`` is refreshed on every report: it is the binding's heartbeat
        (the BubuStack operator marks a binding failed when it is older than its timeout)."""
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        condition = {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": "TransportReady" if ready else "TransportFailed",
            "message": message,
            "lastTransitionTime": now,
        }
        status: dict[str, Any] = {"conditions": [condition]}
        negotiated = self.negotiated
        if negotiated.binary:
            status["negotiatedBinary"] = negotiated.binary
        if negotiated.audio:
            status["negotiatedAudio"] = negotiated.audio
        if negotiated.video:
            status["negotiatedVideo"] = negotiated.video
        try:
            await trio.to_thread.run_sync(self._patch, status)
            negotiated.changed = False
        except (urllib.error.URLError, OSError) as error:
            log.warning(
                "binding status report for %s/%s failed: %s", self.namespace, self.name, error
            )
