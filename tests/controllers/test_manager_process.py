"""``bobravoz controller`` as a real process against the stand-in API server: readiness,
health and metrics endpoints, leadership, and a clean SIGTERM that releases the Lease."""

from __future__ import annotations

import signal
import sys
import urllib.request
from pathlib import Path

import trio
from kubefake import FakeKube, serve_fake_kube
from procs import open_cluster

from bobravoz.sdk.local_pki import LocalPki

LEASE = "coordination.k8s.io/v1/leases"
STORYRUNS = "/apis/runs.bubustack.io/v1alpha1/storyruns"


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
        return response.status, response.read().decode()


async def test_manager_serves_health_leads_and_releases_on_sigterm(tmp_path: Path) -> None:
    fake = FakeKube()
    hub = LocalPki(tmp_path / "pki").issue("hub", namespace="bobravoz-system").files
    tls = {
        "BUBU_HUB_TLS_CERT_FILE": hub.cert,
        "BUBU_HUB_TLS_KEY_FILE": hub.key,
        "BUBU_HUB_CA_FILE": hub.ca,
    }
    async with trio.open_nursery() as nursery:
        host = await nursery.start(serve_fake_kube, fake)
        async with open_cluster(tmp_path) as cluster:
            manager = await cluster.start(
                "controller",
                [
                    sys.executable,
                    "-m",
                    "bobravoz.sdk.cli",
                    "controller",
                    "--api-server",
                    host,
                    "--hub-listen",
                    "127.0.0.1:0",
                    "--health-listen",
                    "127.0.0.1:0",
                    "--leader-elect",
                    "--identity",
                    "replica-1",
                    "--config-namespace",
                    "bobravoz-system",
                ],
                tls,
            )
            health = manager.find("ready")["health"]  # type: ignore[index]
            status, _ = await trio.to_thread.run_sync(fetch, f"http://{health}/healthz")
            assert status == 200
            # The reconciler starts listing StoryRuns only once this replica leads, after it
            # has set its leader gauge: that request proves leadership was taken.
            with trio.fail_after(15):
                await fake.wait_for_request("GET", STORYRUNS)
            _, text = await trio.to_thread.run_sync(fetch, f"http://{health}/metrics")
            assert "bobravoz_controller_leader 1.0" in text
            lease = fake.get(LEASE, "bobravoz-system", "bobravoz-transport-controller")
            assert lease is not None
            assert lease["spec"]["holderIdentity"] == "replica-1"
            manager.process.send_signal(signal.SIGTERM)
            with trio.fail_after(15):
                assert await manager.process.wait() == 0
            released = fake.get(LEASE, "bobravoz-system", "bobravoz-transport-controller")
            assert released is not None
            assert released["spec"]["holderIdentity"] == ""
        nursery.cancel_scope.cancel()
