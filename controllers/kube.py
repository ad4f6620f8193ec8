"""The Kubernetes API, through the official client, as plain dicts (the one module here that
imports ``kubernetes``).

The client is synchronous: callers run these methods in worker threads
(``trio.to_thread.run_sync``). Every call sets ``_request_timeout`` so no thread waits
forever. API errors come out as :class:`ApiError` with the HTTP status.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, final

import kubernetes.client
import kubernetes.watch
from kubernetes.client.exceptions import ApiException

REQUEST_TIMEOUT: Final = 15.0


@final
class ApiError(Exception):
    """A Kubernetes API call failed with HTTP ``status`` (409 Conflict, 410 Gone, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


@final
@dataclass(frozen=True, slots=True)
class Kind:
    """A resource type by group, version and plural (``group`` empty for the core API)."""

    group: str
    version: str
    plural: str


STORYRUNS: Final = Kind("runs.bubustack.io", "v1alpha1", "storyruns")
STORIES: Final = Kind("bubustack.io", "v1alpha1", "stories")
ENGRAMS: Final = Kind("bubustack.io", "v1alpha1", "engrams")
TRANSPORTBINDINGS: Final = Kind("transport.bubustack.io", "v1alpha1", "transportbindings")
LEASES: Final = Kind("coordination.k8s.io", "v1", "leases")


def _translate(error: ApiException) -> ApiError:
    return ApiError(int(error.status or 0), str(error.reason or error.body or "API error"))


def client_for(host: str | None = None) -> kubernetes.client.ApiClient:
    """An API client: ``host`` (tests, local proxies), else in-cluster, else kubeconfig."""
    if host is not None:
        configuration = kubernetes.client.Configuration()
        configuration.host = host
        return kubernetes.client.ApiClient(configuration)
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


@final
class Kube:
    """Typed-by-convention access to the resources bobravoz uses (dicts in, dicts out)."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self._custom = kubernetes.client.CustomObjectsApi(api)
        self._core = kubernetes.client.CoreV1Api(api)

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as error:
            raise _translate(error) from error

    def list(self, kind: Kind, namespace: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """All objects of ``kind`` (in ``namespace`` or cluster-wide) and the list's version."""
        if namespace is None:
            result = self._call(
                self._custom.list_cluster_custom_object, kind.group, kind.version, kind.plural
            )
        else:
            result = self._call(
                self._custom.list_namespaced_custom_object,
                kind.group,
                kind.version,
                namespace,
                kind.plural,
            )
        return list(result.get("items", [])), str(result["metadata"]["resourceVersion"])

    def watch(
        self, kind: Kind, resource_version: str, timeout_seconds: int
    ) -> Iterator[dict[str, Any]]:
        """Watch events (``{"type", "object"}``) from ``resource_version``, bookmarks
        included, until the server ends the watch. A 410 Gone raises ApiError(410)."""
        watcher = kubernetes.watch.Watch()
        try:
            yield from watcher.stream(
                self._custom.list_cluster_custom_object,
                kind.group,
                kind.version,
                kind.plural,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_seconds,
                _request_timeout=timeout_seconds + 5,
            )
        except ApiException as error:
            raise _translate(error) from error
        finally:
            watcher.stop()

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """One object, or None when it does not exist."""
        try:
            result: dict[str, Any] = self._call(
                self._custom.get_namespaced_custom_object,
                kind.group,
                kind.version,
                namespace,
                kind.plural,
                name,
            )
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return result

    def patch(
        self, kind: Kind, namespace: str, name: str, body: dict[str, Any], *, status: bool = False
    ) -> dict[str, Any]:
        """A merge patch of the object or its status subresource (include
        ``metadata.resourceVersion`` in ``body`` for optimistic concurrency)."""
        function = (
            self._custom.patch_namespaced_custom_object_status
            if status
            else self._custom.patch_namespaced_custom_object
        )
        result: dict[str, Any] = self._call(
            function, kind.group, kind.version, namespace, kind.plural, name, body
        )
        return result

    def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object (ApiError 409 when it exists)."""
        result: dict[str, Any] = self._call(
            self._custom.create_namespaced_custom_object,
            kind.group,
            kind.version,
            namespace,
            kind.plural,
            body,
        )
        return result

    def replace(
        self, kind: Kind, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace an object (ApiError 409 when ``metadata.resourceVersion`` is stale)."""
        result: dict[str, Any] = self._call(
            self._custom.replace_namespaced_custom_object,
            kind.group,
            kind.version,
            namespace,
            kind.plural,
            name,
            body,
        )
        return result

    def config_map_data(self, namespace: str, name: str) -> dict[str, str]:
        """The data of a ConfigMap ({} when it does not exist)."""
        try:
            found = self._call(self._core.read_namespaced_config_map, name, namespace)
        except ApiError as error:
            if error.status == 404:
                return {}
            raise
        return dict(found.data or {})

    def record_event(self, namespace: str, body: dict[str, Any]) -> None:
        """Create a core/v1 Event."""
        self._call(self._core.create_namespaced_event, namespace, body)
