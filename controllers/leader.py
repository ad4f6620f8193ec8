"""Leader election with a ``coordination.k8s.io/v1`` Lease, so two replicas never both act.

A small loop of our own (the client's elector is thread-and-sleep based and does not
release on shutdown): acquire the Lease when it is free, expired or ours, renew it every
``renew_every`` seconds with optimistic concurrency (a 409 means another replica won), and
release it on shutdown so a successor does not wait for expiry.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Any, final

import trio

from bobravoz.controllers.kube import LEASES, ApiError, Kube

log = logging.getLogger(__name__)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _micro(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


@final
@dataclass
class LeaderElector:
    """Holds (or waits for) one Lease; :attr:`leading` says whether this replica acts."""

    kube: Kube
    namespace: str
    name: str
    identity: str
    lease_seconds: int = 15
    renew_every: float = 5.0
    leading: bool = False
    #: Campaign rounds completed (acquired, renewed, refused or failed).
    rounds: int = 0

    def __post_init__(self) -> None:
        self.changed = trio.Event()

    def _set(self, leading: bool) -> None:
        if leading != self.leading:
            log.info(
                "%s %s leadership of %s/%s",
                self.identity,
                "took" if leading else "lost",
                self.namespace,
                self.name,
            )
            self.leading = leading
            self.changed.set()
            self.changed = trio.Event()

    def _body(self, lease: dict[str, Any] | None, acquire: bool) -> dict[str, Any]:
        now = _micro(_now())
        spec = dict((lease or {}).get("spec", {}))
        if acquire:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions", 0)) + (1 if lease else 0)
        spec.update(
            holderIdentity=self.identity, leaseDurationSeconds=self.lease_seconds, renewTime=now
        )
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if lease is not None:
            metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec,
        }

    def try_acquire_or_renew(self) -> bool:
        """One round, blocking (run it in a thread): True when this replica holds the Lease."""
        lease = self.kube.get(LEASES, self.namespace, self.name)
        try:
            if lease is None:
                self.kube.create(LEASES, self.namespace, self._body(None, True))
                return True
            spec = lease.get("spec", {})
            holder = spec.get("holderIdentity") or ""
            renewed = _parse(spec.get("renewTime"))
            duration = int(spec.get("leaseDurationSeconds") or self.lease_seconds)
            expired = renewed is None or (_now() - renewed).total_seconds() > duration
            if holder not in ("", self.identity) and not expired:
                return False
            self.kube.replace(
                LEASES, self.namespace, self.name, self._body(lease, holder != self.identity)
            )
            return True
        except ApiError as error:
            if error.status == 409:
                return False
            raise

    def release(self) -> None:
        """Give the Lease up if we hold it (blocking)."""
        lease = self.kube.get(LEASES, self.namespace, self.name)
        if lease is None or lease.get("spec", {}).get("holderIdentity") != self.identity:
            return
        body = self._body(lease, False)
        body["spec"]["holderIdentity"] = ""
        body["spec"]["leaseDurationSeconds"] = 1
        try:
            self.kube.replace(LEASES, self.namespace, self.name, body)
        except ApiError as error:
            log.info("could not release lease: %s", error)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Campaign and renew until cancelled, then release (shielded)."""
        task_status.started()
        try:
            while True:
                try:
                    held = await trio.to_thread.run_sync(self.try_acquire_or_renew)
                except Exception as error:  # noqa: BLE001 - API unreachable: not leading
                    log.warning("lease round failed: %r", error)
                    held = False
                self._set(held)
                self.rounds += 1
                await trio.sleep(self.renew_every)
        finally:
            self._set(False)
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await trio.to_thread.run_sync(self.release)
                except Exception as error:  # noqa: BLE001 - the API may be gone at shutdown
                    log.info("lease not released (%r); it will expire", error)

    async def wait_leading(self) -> None:
        """Return once this replica leads."""
        while not self.leading:
            await self.changed.wait()
