"""Thin Kubernetes controllers that materialize a Story's transport topology."""
