"""Shared fixtures: the asyncio loop grpclib needs, and real child processes for integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bobravoz.runtime.grpc_bridge import open_grpc_loop


@pytest.fixture
async def grpc_loop() -> AsyncIterator[None]:
    """Host grpclib's asyncio loop inside the test's trio run."""
    async with open_grpc_loop():
        yield
