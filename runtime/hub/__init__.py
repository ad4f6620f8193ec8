"""The hub: routing service, binding actors, topology registry and admission.

:mod:`~bobravoz.runtime.hub.service` serves ``HubService.Process``,
:mod:`~bobravoz.runtime.hub.binding` holds one step's buffer and stream ledger,
:mod:`~bobravoz.runtime.hub.registry` maps StoryRuns to routes, and
:mod:`~bobravoz.runtime.hub.main` is the ``bobravoz hub`` process.
"""

from bobravoz.runtime.hub.registry import (
    TopologyFeed,
    TopologyRegistry,
    engram_targets,
)
from bobravoz.runtime.hub.service import (
    Hub,
    HubSettings,
    boundary_limits,
    heartbeat_packet,
    open_hub,
    serve_hub,
    serve_hub_until,
)

__all__ = [
    "Hub",
    "HubSettings",
    "TopologyFeed",
    "TopologyRegistry",
    "boundary_limits",
    "engram_targets",
    "heartbeat_packet",
    "open_hub",
    "serve_hub",
    "serve_hub_until",
]
