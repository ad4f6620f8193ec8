"""Actors, supervisors, bounded channels, topology, the hub and the gRPC bridge."""
