"""Shared fixtures (keep small and generic)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.support.redis_server import (
    RedisClusterServers,
    RedisServer,
    redis_cli_binary,
    redis_server_binary,
)

# No per-example deadline: speed is measured by bench/, never asserted by a test, and on a
# loaded machine a slow example (a first phonenumbers parse, say) failed tests that were right.
settings.register_profile("gateway", deadline=None)
# CI runs the same examples every time (a red build must be reproducible, never a lottery);
# local runs explore new ones.
settings.register_profile(
    "ci", parent=settings.get_profile("gateway"), derandomize=True, print_blob=True
)
settings.load_profile("ci" if os.environ.get("CI") else "gateway")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the whole session (skips where the binary is missing)."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A real three-master Redis Cluster on loopback for the whole session (about 2 s to
    start; skips where redis-server or redis-cli is missing). Tests keep apart by prefix."""
    if redis_server_binary() is None or redis_cli_binary() is None:
        pytest.skip("redis-server and redis-cli are needed for a cluster")
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
