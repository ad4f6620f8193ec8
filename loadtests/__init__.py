"""Benchmarks and load tests for bobravoz (run from the repository root)."""
