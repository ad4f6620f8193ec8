"""The ``transport.v1`` wire contract: protos, generated code, wire helpers, validation."""
