"""Build every message class's codec before the first packet needs it.

betterproto2 prepares a message class (its field table, its encoders) the first time one is
serialised or parsed: about 67 ms for the 23 classes of ``transport.v1`` and the
``google.protobuf`` values on the reference machine, and 50 ms for the first packet alone. A
process that streams calls :func:`warm_messages` at start-up, before it reports ready, so that
cost is not paid by the first packets of a stream (it showed as a 130-170 ms p99 in a 200/s
run of ``bobravoz up``).
"""

from __future__ import annotations

import inspect

import betterproto2

from bobravoz.protocol.gen.google import protobuf
from bobravoz.protocol.gen.transport import v1


def warm_messages() -> int:
    """Serialise and parse an empty instance of every generated message class; return how
    many classes were warmed."""
    warmed = 0
    for module in (v1, protobuf):
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, betterproto2.Message)
                and value is not betterproto2.Message
            ):
                value().parse(bytes(value()))
                warmed += 1
    return warmed
