"""bobravoz: a streaming transport for BubuStack Stories (hub, connectors, controllers, SDK).

The importable packages live in the repository's top-level folders; this folder only gives
them the common ``bobravoz`` prefix (each entry beside this file links to one of them).
"""

__version__ = "0.1.0"
