"""Unit: a Control stream's feed of hub-link events keeps the newest events when it falls
behind (the docstring's promise; the old feed dropped the newest), and counts what it drops."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from bobravoz.connector.config import load_config
from bobravoz.connector.hub_link import FEED_DEPTH, HubLink, LinkEvent
from bobravoz.runtime.metrics import TransportMetrics

ENV = {
    "BUBU_HUB_ENDPOINT": "127.0.0.1:1",
    "BUBU_STORYRUN_ID": "run-1",
    "BUBU_POD_NAMESPACE": "default",
    "BUBU_STEP_NAME": "producer",
    "BUBU_CONNECTOR_GENERATION": "1",
}


async def test_a_full_feed_keeps_the_newest_events_and_counts_the_rest() -> None:
    link = HubLink(load_config(ENV), TransportMetrics(CollectorRegistry(), component="connector"))
    feed = link.subscribe()
    events = [LinkEvent("draining", f"reason-{index}") for index in range(FEED_DEPTH + 3)]
    for event in events:
        link._publish(event)  # noqa: SLF001 - the link's own publication path
    kept = [feed.receive_nowait() for _ in range(FEED_DEPTH)]
    assert kept == events[3:]
    assert link.events_dropped == 3
    link.unsubscribe(feed)
    link._publish(events[0])  # noqa: SLF001 - a closed feed is forgotten, not an error
    assert link.events_dropped == 3
