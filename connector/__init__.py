"""The connector sidecar: serves one engram locally and links it to the hub."""
