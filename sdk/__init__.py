"""The engram SDK: write one async stream handler, run it against a connector.

``from bobravoz.sdk import Packet, StreamContext, run_engram``; see
:mod:`bobravoz.sdk.engram` for the contract and :mod:`bobravoz.sdk.testkit` for tests.
"""

from bobravoz.sdk.engram import Handler, StreamContext, run_engram, serve_engram
from bobravoz.sdk.packet import AudioFrame, Envelope, Packet, VideoFrame
from bobravoz.sdk.report import report

__all__ = [
    "AudioFrame",
    "Envelope",
    "Handler",
    "Packet",
    "StreamContext",
    "VideoFrame",
    "report",
    "run_engram",
    "serve_engram",
]
