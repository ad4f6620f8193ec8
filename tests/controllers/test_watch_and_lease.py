"""Watch machinery and leader election against the stand-in API server (real HTTP, the real
Kubernetes REST and watch protocol: chunked events, resourceVersion, bookmarks, 410, 409)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from kubefake import FakeKube, serve_fake_kube
from procs import eventually

from bobravoz.controllers.kube import STORYRUNS, ApiError, Kube, client_for
from bobravoz.controllers.leader import LeaderElector
from bobravoz.controllers.watch import watch_forever

RESOURCE = "runs.bubustack.io/v1alpha1/storyruns"


def storyrun(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "runs.bubustack.io/v1alpha1",
        "kind": "StoryRun",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {"storyRef": {"name": "chain"}},
    }


async def test_list_watch_bookmarks_410_relist_and_reconnect() -> None:
    fake = FakeKube()
    fake.put(RESOURCE, storyrun("r1"))
    seen: list[tuple[str, str]] = []
    arrived = trio.Event()

    def on_object(kind: str, obj: dict[str, Any]) -> None:
        seen.append((kind, obj["metadata"]["name"]))
        arrived.set()

    async with trio.open_nursery() as nursery:
        host = await nursery.start(serve_fake_kube, fake)
        kube = Kube(client_for(host))
        stats = await nursery.start(
            lambda task_status: watch_forever(
                kube,
                STORYRUNS,
                on_object,
                timeout_seconds=2,
                backoff_initial=0.05,
                task_status=task_status,
            )
        )
        assert seen == [("ADDED", "r1")]
        with trio.fail_after(10):
            fake.put(RESOURCE, storyrun("r2"))
            await eventually(lambda: ("ADDED", "r2") in seen)
            assert stats.lists == 1
            await eventually(lambda: stats.bookmarks > 0)
            # History is compacted and the stream cut: the client re-watches from its version,
            # gets 410 Gone, and relists.
            fake.compact()
            fake.drop_watches()
            await eventually(lambda: stats.relists_after_gone > 0)
            await eventually(lambda: stats.lists >= 2)
        assert stats.reconnects >= 1
        assert seen.count(("ADDED", "r2")) >= 2  # relisted objects are delivered again
        nursery.cancel_scope.cancel()


async def test_status_writes_get_409_on_stale_versions() -> None:
    fake = FakeKube()
    fake.put(RESOURCE, storyrun("r1"))
    async with trio.open_nursery() as nursery:
        host = await nursery.start(serve_fake_kube, fake)
        kube = Kube(client_for(host))
        current = await trio.to_thread.run_sync(kube.get, STORYRUNS, "demo", "r1")
        assert current is not None
        version = current["metadata"]["resourceVersion"]
        body = {"metadata": {"resourceVersion": version}, "status": {"phase": "Running"}}
        await trio.to_thread.run_sync(
            lambda: kube.patch(STORYRUNS, "demo", "r1", body, status=True)
        )
        with pytest.raises(ApiError) as conflict:
            await trio.to_thread.run_sync(
                lambda: kube.patch(STORYRUNS, "demo", "r1", body, status=True)
            )
        assert conflict.value.status == 409
        nursery.cancel_scope.cancel()


async def test_only_one_replica_leads_and_leadership_moves_on_release() -> None:
    fake = FakeKube()
    async with trio.open_nursery() as nursery:
        host = await nursery.start(serve_fake_kube, fake)
        first = LeaderElector(
            Kube(client_for(host)), "bobravoz-system", "bobravoz", "a", renew_every=0.1
        )
        second = LeaderElector(
            Kube(client_for(host)), "bobravoz-system", "bobravoz", "b", renew_every=0.1
        )
        first_scope = trio.CancelScope()
        nursery.start_soon(_run_in, first, first_scope)
        with trio.fail_after(10):
            await first.wait_leading()
        async with trio.open_nursery() as inner:
            inner.start_soon(second.run)
            # The second replica has campaigned (read the Lease held by "a") and stood back.
            await eventually(lambda: second.rounds >= 1)
            assert first.leading
            assert not second.leading
            lease = fake.get("coordination.k8s.io/v1/leases", "bobravoz-system", "bobravoz")
            assert lease is not None
            assert lease["spec"]["holderIdentity"] == "a"
            first_scope.cancel()  # shutdown releases the Lease: no wait for expiry
            with trio.fail_after(10):
                await second.wait_leading()
            assert not first.leading
            inner.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


async def _run_in(elector: LeaderElector, scope: trio.CancelScope) -> None:
    with scope:
        await elector.run()
