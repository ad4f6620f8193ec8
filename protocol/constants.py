"""Wire constants of ``transport.v1`` defined once: method paths, metadata keys, fatal codes."""

from __future__ import annotations

from typing import Final

from bobravoz.protocol.status import StatusCode

#: ``HubService.Process``: connector → hub (and, peer to peer, connector → connector).
PROCESS_METHOD: Final = "/transport.v1.HubService/Process"
#: ``TransportConnectorService`` methods an engram calls on its connector.
DATA_METHOD: Final = "/transport.v1.TransportConnectorService/Data"
CONTROL_METHOD: Final = "/transport.v1.TransportConnectorService/Control"
HUB_PUSH_METHOD: Final = "/transport.v1.TransportConnectorService/HubPush"

#: Packet metadata key marking a heartbeat (value ``"true"``); heartbeats carry no data.
HEARTBEAT_KEY: Final = "bubu-heartbeat"

#: Refusals of a connector's upstream (hub or peer) that no retry can fix.
FATAL_HUB_CODES: Final = frozenset(
    {
        StatusCode.INVALID_ARGUMENT,
        StatusCode.FAILED_PRECONDITION,
        StatusCode.NOT_FOUND,
        StatusCode.PERMISSION_DENIED,
        StatusCode.UNAUTHENTICATED,
        StatusCode.UNIMPLEMENTED,
    }
)
#: Refusals by a connector that an engram's retry cannot fix (a step the connector does not
#: know may still appear: NOT_FOUND is retried).
FATAL_CONNECTOR_CODES: Final = FATAL_HUB_CODES - {StatusCode.NOT_FOUND}
